"""Schema 2, Diff-Tuning: a second reference's FID and KID (the pre-training domain), the fine-tuned weights
file, the training seed of a held-out row, and the steps table (FID at intermediate training steps)."""

from __future__ import annotations

import sqlalchemy as sa

from skipsearch.storage.migrations.shape import apply, legacy_version, per_trial, refuse_downgrade

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def tables() -> dict[str, list]:
    return {"skipsearch_steps": per_trial(
        sa.Column("step", sa.Integer, nullable=False), sa.Column("n", sa.Integer, nullable=False),
        sa.Column("fid", sa.Float, nullable=False), sa.Column("kid", sa.Float),
        sa.Column("source_fid", sa.Float), sa.Column("source_kid", sa.Float),
        sa.Column("wall_s", sa.Float),
        key=("step",))}


def columns() -> dict[str, list[sa.Column]]:
    return {"skipsearch_trials": [sa.Column("source_fid", sa.Float), sa.Column("source_kid", sa.Float),
                                  sa.Column("weights_path", sa.Text), sa.Column("weights_hash", sa.String(64))],
            "skipsearch_confirmations": [sa.Column("source_fid", sa.Float), sa.Column("source_kid", sa.Float),
                                         sa.Column("train_seed", sa.Integer)]}


def upgrade() -> None:
    apply(tables(), columns())
    legacy_version(2)()


downgrade = refuse_downgrade
