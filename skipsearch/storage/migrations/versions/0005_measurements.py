"""Every number as a row: ``skipsearch_measurements`` holds each number a metric gave (study, trial, stage, N,
training step, held-out seed set, domain, metric, feature space -> value).

The numbers already stored are copied in: each trial's, rung's, step's and held-out row's fid, kid and kid_std
(``source_fid`` and ``source_kid`` as domain "source"; not delta_fid, which is derived from two of them), with
the row's own creation time. A rung or step names no feature space: it is its trial's, or, for a trial that
has no row (it died after a rung), the study's ``metric.extractor``. The old columns stay; they agree with
these rows exactly.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from skipsearch.errors import StorageError
from skipsearch.storage.migrations.shape import apply, per_trial, refuse_downgrade

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "skipsearch_measurements"
# a column holding a number -> (domain, metric), as this revision found them
NUMBERS = {"fid": ("target", "fid"), "kid": ("target", "kid"), "kid_std": ("target", "kid_std"),
           "source_fid": ("source", "fid"), "source_kid": ("source", "kid")}
# table -> (stage, its number columns, its column of N, of the step, of the seed set, of the extractor)
SOURCES = {"skipsearch_trials": ("trial", ("fid", "kid", "kid_std", "source_fid", "source_kid"), None, None,
                                 "extractor"),
           "skipsearch_rungs": ("rung", ("fid", "kid"), None, None, None),
           "skipsearch_steps": ("step", ("fid", "kid", "source_fid", "source_kid"), "step", None, None),
           "skipsearch_confirmations": ("confirmation", ("fid", "kid", "kid_std", "source_fid", "source_kid"),
                                        None, "seed_set", "extractor")}
KEY = ("study_name", "trial_number", "stage", "n", "step", "seed_set", "domain", "metric", "extractor")


def tables() -> dict[str, list]:
    return {TABLE: per_trial(
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("seed_set", sa.Integer, nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("extractor", sa.String(128), nullable=False),
        sa.Column("value", sa.Float),
        key=("stage", "n", "step", "seed_set", "domain", "metric", "extractor"))}


def columns() -> dict[str, list[sa.Column]]:
    return {}


def _study_extractors(conn) -> dict[str, str | None]:
    out = {}
    for name, spec_json in conn.execute(sa.text("SELECT study_name, spec_json FROM skipsearch_studies")):
        metric = (json.loads(spec_json) or {}).get("metric") or {}
        out[name] = metric.get("extractor")
    return out


def measurements(conn) -> list[dict]:
    """One row per number the old tables hold."""
    by_study = _study_extractors(conn)
    by_trial = {(s, n): e for s, n, e in conn.execute(
        sa.text("SELECT study_name, trial_number, extractor FROM skipsearch_trials"))}
    rows = []
    for table, (stage, numbers, step, seed_set, extractor) in SOURCES.items():
        wanted = ["study_name", "trial_number", "n", "created_at", *numbers,
                  *(c for c in (step, seed_set, extractor) if c)]
        for r in conn.execute(sa.text(f"SELECT {', '.join(wanted)} FROM {table} ORDER BY id")).mappings():
            feature_space = (r[extractor] if extractor else
                             by_trial.get((r["study_name"], r["trial_number"])) or by_study.get(r["study_name"]))
            if feature_space is None:
                raise StorageError(f"cannot upgrade the database: {table} holds numbers of study "
                                   f"{r['study_name']!r}, trial {r['trial_number']}, whose feature space is "
                                   f"recorded nowhere (no trial row, no stored spec with metric.extractor)")
            for column in numbers:
                if r[column] is None:
                    continue
                domain, metric = NUMBERS[column]
                rows.append({"study_name": r["study_name"], "trial_number": r["trial_number"], "stage": stage,
                             "n": r["n"], "step": r[step] if step else -1,
                             "seed_set": r[seed_set] if seed_set else -1, "domain": domain, "metric": metric,
                             "extractor": feature_space, "value": r[column], "created_at": r["created_at"]})
    return rows


def upgrade() -> None:
    created = apply(tables(), columns())
    if TABLE not in created:
        return  # its rows were written with it
    bind = op.get_bind()
    rows = measurements(bind)
    if rows:
        target = sa.table(TABLE, *(sa.column(c) for c in (*KEY, "value", "created_at")))
        bind.execute(target.insert(), rows)


downgrade = refuse_downgrade
