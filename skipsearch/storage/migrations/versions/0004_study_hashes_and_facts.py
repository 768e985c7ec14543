"""The content hashes a study was stored with (its model's weights, each data set it names) and its model's
facts (skip points, channels, resolution, conditions as JSON). Both came while ``skipsearch_schema`` said 3,
without a new number, so the old counter stays at 3 here."""

from __future__ import annotations

import sqlalchemy as sa

from skipsearch.storage.migrations.shape import apply, refuse_downgrade

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def tables() -> dict[str, list]:
    return {
        "skipsearch_study_hashes": [
            sa.Column("study_name", sa.String(256), primary_key=True),
            sa.Column("field", sa.String(64), primary_key=True),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)],
        "skipsearch_study_facts": [
            sa.Column("study_name", sa.String(256), primary_key=True),
            sa.Column("facts_json", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)],
    }


def columns() -> dict[str, list[sa.Column]]:
    return {}


def upgrade() -> None:
    apply(tables(), columns())


downgrade = refuse_downgrade
