"""A database written by the previous skipsearch (main at 7079771, before the method and model-family
registries) still opens, resumes and exports, and today's code reproduces the FIDs it recorded: on SQLite and on
PostgreSQL.

``tests/data/main-7079771.db`` was made by that commit's code: the tiny Skip-Tuning study ``old-skip`` (4
trials, rungs [64] below n = 128, held-out confirmation) and the tiny Diff-Tuning study ``old-dt`` (3 trials).
That commit wrote SQLite only; its PostgreSQL twin is every row of that file copied into a fresh PostgreSQL
database under the same schemas (Optuna's at the file's alembic revision, skipsearch's at the file's version).
The file's schema version is today's (3), so the schema upgrade is checked on a copy taken back to version 2
(before several drivers) and 1 (before Diff-Tuning), on both databases.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from conftest import tiny_dt_spec_dict, tiny_spec_dict
from sqlalchemy import MetaData, create_engine, inspect, text

import skipsearch
from skipsearch.errors import StorageError
from skipsearch.spec import parse_spec
from skipsearch.storage import Store
from skipsearch.storage import tables as t

OLD = Path(__file__).parent / "data" / "main-7079771.db"
OLD_SKIP_FIDS = {0: 17.747196, 1: 22.282037, 2: 22.088870, 3: 17.919428}  # as the old code printed them


# What each schema version added to skipsearch's tables (storage/tables.py): taking these away gives the older one.
ADDED = {2: {"columns": {"skipsearch_trials": ("source_fid", "source_kid", "weights_path", "weights_hash"),
                         "skipsearch_confirmations": ("source_fid", "source_kid", "train_seed")},
             "tables": ("skipsearch_steps",)},
         3: {"columns": {"skipsearch_trials": ("evaluated",)}, "tables": ("skipsearch_drivers", "skipsearch_claims")}}

# Tables added without a new schema version (every writer creates them, no reader needs them): the file lacks them.
LATER_TABLES = ("skipsearch_study_hashes", "skipsearch_study_facts")


@pytest.fixture(params=["sqlite", "postgresql"])
def old_db(request, tmp_path, monkeypatch) -> str:
    """The old database: the file itself (a copy), or its every row in a fresh PostgreSQL database."""
    monkeypatch.chdir(tmp_path)  # what a run leaves in its working folder (artifacts beside no file) stays here
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        shutil.copy(OLD, path)
        return f"sqlite:///{path}"
    server = request.getfixturevalue("postgres")
    return copy_to_postgres(server.create_database(f"old_{abs(hash(request.node.nodeid)) % 10**9}"))


def copy_to_postgres(url: str) -> str:
    """Every row of the old file in the empty PostgreSQL database at ``url``, under the schemas that wrote them."""
    Store(url).close()  # skipsearch's tables, at today's version: the file's (checked below)
    optuna.storages.RDBStorage(url).engine.dispose()  # Optuna's, at today's alembic revision: the file's too
    old, new = create_engine(f"sqlite:///{OLD}"), create_engine(url)
    old_tables, new_tables = MetaData(), MetaData()
    old_tables.reflect(old)
    new_tables.reflect(new)
    assert sorted(old_tables.tables) == sorted(n for n in new_tables.tables if n not in LATER_TABLES)
    for name, table in old_tables.tables.items():  # the same columns: a faithful copy, not a conversion
        assert sorted(table.columns.keys()) == sorted(new_tables.tables[name].columns.keys()), name
    with old.connect() as src, new.begin() as dst:
        for table in reversed(new_tables.sorted_tables):  # the rows today's code put there (versions) go
            dst.execute(table.delete())
        for table in new_tables.sorted_tables:  # parents before children
            if table.name in LATER_TABLES:
                continue
            rows = [dict(r) for r in src.execute(old_tables.tables[table.name].select()).mappings()]
            if rows:
                dst.execute(table.insert(), rows)
        for table in new_tables.sorted_tables:  # the next id after the copied ones, as if they were inserted here
            for column in table.primary_key.columns:
                seq = dst.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                  {"t": table.name, "c": column.name}).scalar()
                if seq:
                    dst.execute(text(f'SELECT setval(:s, COALESCE(MAX("{column.name}"), 0) + 1, false) '
                                     f'FROM "{table.name}"'), {"s": seq})
    old.dispose()
    new.dispose()
    return url


def take_back_to(url: str, version: int) -> None:
    """Make the database what skipsearch at schema ``version`` left: without the columns and tables added later
    (and, before Diff-Tuning, without the Diff-Tuning study's rows)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if version < 2:
            for table in ("skipsearch_trials", "skipsearch_rungs", "skipsearch_confirmations", "skipsearch_studies"):
                conn.execute(text(f"DELETE FROM {table} WHERE study_name = 'old-dt'"))
        for later in range(version + 1, t.SCHEMA_VERSION + 1):
            for table, columns in ADDED[later]["columns"].items():
                for column in columns:
                    conn.execute(text(f'ALTER TABLE {table} DROP COLUMN "{column}"'))
            for table in ADDED[later]["tables"]:
                conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("UPDATE skipsearch_schema SET version = :v"), {"v": version})
    engine.dispose()


def schema_of(url: str) -> tuple[int, dict[str, set[str]]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version FROM skipsearch_schema")).scalar()
        names = set(inspect(conn).get_table_names())
        columns = {n: {c["name"] for c in inspect(conn).get_columns(n)} for n in names if n.startswith("skipsearch_")}
    engine.dispose()
    return version, columns


def test_old_database_reads_without_a_write(old_db):
    frame = skipsearch.trials(old_db, "old-skip")
    assert dict(zip(frame.trial_number, frame.fid.round(6))) == OLD_SKIP_FIDS
    won = skipsearch.best(old_db, "old-skip")
    assert won.provenance.trial == 3 and won.provenance.confirmation is not None
    assert [s.level for s in won.provenance.skips] == [0, 1, 2]
    dt = skipsearch.best(old_db, "old-dt")
    assert dt.provenance.weights is not None and dt.provenance.source.reference == "digits-0to4"


def test_old_skip_study_resumes_and_today_reproduces_its_fids(old_db, tmp_path):
    spec = parse_spec(tiny_spec_dict("old-skip", metric={"n": 128, "rungs": [64], "batch_size": 64},
                                     search={"trials": 4}))
    result = skipsearch.run(spec, storage=old_db, trials=6)
    frame = result.trials.set_index("trial_number")
    assert len(frame) == 6 and set(frame.state) <= {"COMPLETE", "PRUNED"}
    assert {n: round(frame.loc[n].fid, 6) for n in OLD_SKIP_FIDS} == OLD_SKIP_FIDS  # kept, not redone
    coefficients = [frame.loc[n].coefficients_json for n in frame.index]
    assert len(set(coefficients)) == len(coefficients)  # the extension proposed new points
    for trial in (0, 3):  # exported from rows the old code wrote, re-sampled by today's
        path = skipsearch.export(old_db, "old-skip", tmp_path / f"t{trial}.yaml", trial=trial)
        check = skipsearch.verify(path)
        assert check.ok and check.recorded_fid == pytest.approx(OLD_SKIP_FIDS[trial], abs=1e-6), check


def test_old_diff_tuning_study_resumes(old_db, tmp_path):
    spec = parse_spec(tiny_dt_spec_dict("old-dt", weights_dir=str(tmp_path / "weights"), search={"trials": 3}))
    before = skipsearch.trials(old_db, "old-dt").set_index("trial_number")
    result = skipsearch.run(spec, storage=old_db, trials=4)
    after = result.trials.set_index("trial_number")
    assert len(after) == 4 and after.loc[3].state in ("COMPLETE", "PRUNED")
    assert (after.loc[[0, 1, 2], "fid"] == before.fid).all()
    assert Store(old_db, create=False).study_spec("old-dt")["finetune"]["steps"] == 6


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_schema_is_upgraded_in_place_and_the_study_resumes(old_db, version):
    take_back_to(old_db, version)
    assert schema_of(old_db)[0] == version
    before = {n: round(f, 6) for n, f in OLD_SKIP_FIDS.items()}
    spec = parse_spec(tiny_spec_dict("old-skip", metric={"n": 128, "rungs": [64], "batch_size": 64},
                                     search={"trials": 4}, confirm={"top_k": 0}))
    result = skipsearch.run(spec, storage=old_db, trials=5)  # a writer upgrades the schema, then resumes
    version_now, columns = schema_of(old_db)
    assert version_now == t.SCHEMA_VERSION
    assert columns == {name: {c.name for c in table.columns} for name, table in t.metadata.tables.items()}
    frame = result.trials.set_index("trial_number")
    assert len(frame) == 5 and {n: round(frame.loc[n].fid, 6) for n in OLD_SKIP_FIDS} == before
    assert frame.loc[list(OLD_SKIP_FIDS), "evaluated"].isna().all()  # NULL: counted, as before schema 3
    assert len(skipsearch.confirmations(old_db, "old-skip", per_seed_set=True)) > 0  # the old held-out rows kept


def test_a_reader_of_a_schema_2_database_reads_it_or_says_how_to_upgrade(old_db):
    take_back_to(old_db, 2)
    try:
        frame = skipsearch.trials(old_db, "old-skip")
    except StorageError as err:
        assert "older skipsearch" in str(err), str(err)  # refused, with the way out
    else:
        assert dict(zip(frame.trial_number, frame.fid.round(6))) == OLD_SKIP_FIDS
    assert schema_of(old_db)[0] == 2  # a reader never upgrades
