"""Schema 3, several drivers: one row per ``skipsearch run`` process with its heartbeat, the claims (who holds
the study lock, which trial and which held-out evaluation each driver runs), and whether a failed trial counts
towards the budget (``skipsearch_trials.evaluated``; NULL, as every older row has it, counts)."""

from __future__ import annotations

import sqlalchemy as sa

from skipsearch.storage.migrations.shape import apply, legacy_version, refuse_downgrade

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def tables() -> dict[str, list]:
    return {
        "skipsearch_drivers": [
            sa.Column("driver_id", sa.String(32), primary_key=True),
            sa.Column("study_name", sa.String(256), nullable=False),
            sa.Column("machine", sa.String(512), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("proc_start", sa.BigInteger),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("stopped_at", sa.DateTime(timezone=True))],
        "skipsearch_claims": [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("study_name", sa.String(256), nullable=False),
            sa.Column("item", sa.String(128), nullable=False),
            sa.Column("driver_id", sa.String(32), nullable=False),
            sa.Column("trial_number", sa.Integer),
            sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
            sa.UniqueConstraint("study_name", "item")],
    }


def columns() -> dict[str, list[sa.Column]]:
    return {"skipsearch_trials": [sa.Column("evaluated", sa.Boolean)]}


def upgrade() -> None:
    apply(tables(), columns())
    legacy_version(3)()


downgrade = refuse_downgrade
