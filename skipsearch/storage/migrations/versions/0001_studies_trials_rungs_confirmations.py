"""Schema 1: studies, their trials, the trials' rungs (FID at a smaller N) and held-out confirmations.

This is what ``skipsearch_schema.version`` 1 stood for; that table comes here too, with its version, so that
the skipsearch of that time reads a database made by this one.
"""

from __future__ import annotations

import sqlalchemy as sa

from skipsearch.storage.migrations.shape import apply, legacy_version, per_trial, refuse_downgrade

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def tables() -> dict[str, list]:
    return {
        "skipsearch_schema": [sa.Column("version", sa.Integer, primary_key=True)],
        "skipsearch_studies": [
            sa.Column("study_name", sa.String(256), primary_key=True),
            sa.Column("spec_json", sa.Text, nullable=False),
            sa.Column("winner_trial", sa.Integer, nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)],
        "skipsearch_trials": per_trial(
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("coefficients_json", sa.Text, nullable=False),
            sa.Column("fid", sa.Float), sa.Column("kid", sa.Float), sa.Column("kid_std", sa.Float),
            sa.Column("delta_fid", sa.Float),
            sa.Column("n", sa.Integer, nullable=False), sa.Column("seed_start", sa.Integer, nullable=False),
            sa.Column("sampler_json", sa.Text, nullable=False), sa.Column("nfe", sa.Integer, nullable=False),
            sa.Column("model_id", sa.String(128), nullable=False), sa.Column("model_hash", sa.String(64)),
            sa.Column("extractor", sa.String(128), nullable=False), sa.Column("ref_hash", sa.String(64)),
            sa.Column("versions_json", sa.Text, nullable=False),
            sa.Column("wall_s", sa.Float), sa.Column("error", sa.Text)),
        "skipsearch_rungs": per_trial(
            sa.Column("n", sa.Integer, nullable=False),
            sa.Column("fid", sa.Float, nullable=False), sa.Column("kid", sa.Float),
            sa.Column("wall_s", sa.Float),
            key=("n",)),
        "skipsearch_confirmations": per_trial(
            sa.Column("seed_set", sa.Integer, nullable=False),
            sa.Column("seed_start", sa.Integer, nullable=False), sa.Column("n", sa.Integer, nullable=False),
            sa.Column("fid", sa.Float, nullable=False), sa.Column("kid", sa.Float), sa.Column("kid_std", sa.Float),
            sa.Column("extractor", sa.String(128), nullable=False), sa.Column("ref_hash", sa.String(64)),
            sa.Column("wall_s", sa.Float),
            key=("seed_set", "n")),
    }


def columns() -> dict[str, list[sa.Column]]:
    return {}


def upgrade() -> None:
    apply(tables(), columns())
    legacy_version(1)()


downgrade = refuse_downgrade
