"""Every number in one table, and a method's own values in another: the number columns of trials, rungs, steps
and held-out rows (fid, kid, kid_std, delta_fid, source_fid, source_kid) are dropped, as
``skipsearch_measurements`` holds each of them; ``skipsearch_extras`` takes what was Diff-Tuning's alone
(``weights_path`` and ``weights_hash`` of a trial, ``train_seed`` of a held-out evaluation), under the same names.

Nothing measured is lost. Before a column goes, every number in it is checked against its measurement row:
a row that is missing (a number written by a skipsearch from before 0005 into a database already at 0005) is
written now, the way 0005 did; a row that disagrees stops the upgrade, which changes nothing. ``delta_fid`` is
the trial's FID minus the baseline's; readers derive it.

From here on, a skipsearch from before this revision cannot read or write the database (it names the dropped
columns); ``skipsearch_schema.version`` goes to 4, which it does not know.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from skipsearch.errors import StorageError
from skipsearch.storage.migrations.shape import apply, legacy_version, per_trial, refuse_downgrade

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLE = "skipsearch_extras"
MEASUREMENTS = "skipsearch_measurements"
KEY = ("study_name", "trial_number", "stage", "n", "step", "seed_set", "domain", "metric", "extractor")
# table -> its number columns, as 0005 found them, that go now
DROPPED = {"skipsearch_trials": ("fid", "kid", "kid_std", "delta_fid", "source_fid", "source_kid",
                                 "weights_path", "weights_hash"),
           "skipsearch_rungs": ("fid", "kid"),
           "skipsearch_steps": ("fid", "kid", "source_fid", "source_kid"),
           "skipsearch_confirmations": ("fid", "kid", "kid_std", "source_fid", "source_kid", "train_seed")}
# table -> (stage, the columns that become extras, its column of the seed set)
EXTRAS = {"skipsearch_trials": ("trial", ("weights_path", "weights_hash"), None),
          "skipsearch_confirmations": ("confirmation", ("train_seed",), "seed_set")}


def tables() -> dict[str, list]:
    return {TABLE: per_trial(
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("seed_set", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value_json", sa.Text, nullable=False),
        key=("stage", "n", "step", "seed_set", "name"))}


def columns() -> dict[str, list[sa.Column]]:
    return {}


def _revision_0005():
    """Revision 0005's module, whose ``measurements`` reads the old columns as measurement rows (its file name
    starts with a digit, so it is loaded from its path)."""
    path = Path(__file__).with_name("0005_measurements.py")
    spec = importlib.util.spec_from_file_location("skipsearch_revision_0005", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _missing_measurements(conn) -> list[dict]:
    """The numbers of the old columns that have no measurement row yet; a row that disagrees stops the upgrade."""
    have = {tuple(r[k] for k in KEY): r["value"] for r in conn.execute(
        sa.text(f"SELECT {', '.join(KEY)}, value FROM {MEASUREMENTS}")).mappings()}
    missing = []
    for row in _revision_0005().measurements(conn):
        key = tuple(row[k] for k in KEY)
        if key not in have:
            missing.append(row)
        elif have[key] != row["value"]:
            raise StorageError(f"cannot upgrade the database: study {row['study_name']!r}, trial "
                               f"{row['trial_number']} has {row['metric']} = {row['value']!r} in its "
                               f"{row['stage']} row but {have[key]!r} in {MEASUREMENTS}; nothing was changed")
    return missing


def _extras(conn) -> list[dict]:
    rows = []
    for table, (stage, names, seed_set) in EXTRAS.items():
        wanted = ["study_name", "trial_number", "n", "created_at", *names, *([seed_set] if seed_set else [])]
        for r in conn.execute(sa.text(f"SELECT {', '.join(wanted)} FROM {table} ORDER BY id")).mappings():
            rows += [{"study_name": r["study_name"], "trial_number": r["trial_number"], "stage": stage, "n": r["n"],
                      "step": -1, "seed_set": r[seed_set] if seed_set else -1, "name": name,
                      "value_json": json.dumps(r[name]), "created_at": r["created_at"]}
                     for name in names if r[name] is not None]
    return rows


def upgrade() -> None:
    bind = op.get_bind()
    apply(tables(), columns())
    missing = _missing_measurements(bind)
    if missing:
        target = sa.table(MEASUREMENTS, *(sa.column(c) for c in (*KEY, "value", "created_at")))
        bind.execute(target.insert(), missing)
    extras = _extras(bind)
    if extras:
        target = sa.table(TABLE, *(sa.column(c) for c in ("study_name", "trial_number", "stage", "n", "step",
                                                          "seed_set", "name", "value_json", "created_at")))
        bind.execute(target.insert(), extras)
    for table, names in DROPPED.items():
        there = {c["name"] for c in sa.inspect(bind).get_columns(table)}
        for name in names:
            if name in there:
                op.drop_column(table, name)
    legacy_version(4)()


downgrade = refuse_downgrade
