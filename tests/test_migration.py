"""Databases written by earlier skipsearch versions open, upgrade in place through the schema revisions
(``skipsearch/storage/migrations``) and keep every number: on SQLite and on PostgreSQL.

``tests/data/main-7079771.db`` was made by that commit's code (before the method and model-family registries):
the tiny Skip-Tuning study ``old-skip`` (4 trials, rungs [64] below n = 128, held-out confirmation) and the tiny
Diff-Tuning study ``old-dt`` (3 trials). Its ``skipsearch_schema`` says 3, without the study hashes and facts
tables: it is stamped at revision 0003 and upgraded through 0004 to 0006. It still opens, resumes and exports,
and today's code reproduces its FIDs; copies taken back to version 2 (before several drivers) and 1 (before
Diff-Tuning) upgrade too.

``tests/data/main-6a47297.db`` was made by main at 6a47297, the last commit before the revisions: the same two
studies, with the Diff-Tuning study's steps, and both tables that came without a version: stamped at 0004,
upgraded through 0005, which copies every stored number into ``skipsearch_measurements``, and 0006, which drops
the number columns and moves Diff-Tuning's own values into ``skipsearch_extras``: every number and value reads
back unchanged, bit for bit, in the frames. A reader opens neither file before it is upgraded; it says how.

Those commits wrote SQLite only; the PostgreSQL twin of a file is every row of it copied into a fresh PostgreSQL
database under the same schemas (Optuna's at the file's alembic revision, skipsearch's at the revision the file
stands for, made by the revisions themselves and checked column by column against the file).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import tiny_dt_spec_dict, tiny_spec_dict
from sqlalchemy import MetaData, create_engine, inspect, text

import skipsearch
from skipsearch.errors import StorageError
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store, revisions
from skipsearch.storage import tables as t
from skipsearch.storage.migrations import FOLDER, HEAD, REVISIONS, VERSION_TABLE

DATA = Path(__file__).parent / "data"
OLD = DATA / "main-7079771.db"
MAIN = DATA / "main-6a47297.db"
OLD_SKIP_FIDS = {0: 17.747196, 1: 22.282037, 2: 22.088870, 3: 17.919428}  # as the old code printed them
LEGACY_TABLES = ("skipsearch_trials", "skipsearch_rungs", "skipsearch_steps", "skipsearch_confirmations")


# What each schema version added to skipsearch's tables (storage/tables.py): taking these away gives the older one.
ADDED = {2: {"columns": {"skipsearch_trials": ("source_fid", "source_kid", "weights_path", "weights_hash"),
                         "skipsearch_confirmations": ("source_fid", "source_kid", "train_seed")},
             "tables": ("skipsearch_steps",)},
         3: {"columns": {"skipsearch_trials": ("evaluated",)}, "tables": ("skipsearch_drivers", "skipsearch_claims")}}


def _copy_of(request, tmp_path, source: Path, revision: str) -> str:
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        shutil.copy(source, path)
        return f"sqlite:///{path}"
    server = request.getfixturevalue("postgres")
    return copy_to_postgres(server.create_database(f"old_{abs(hash(request.node.nodeid)) % 10**9}"), source,
                            revision)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_db(request, tmp_path, monkeypatch) -> str:
    """The database of main at 7079771: the file itself (a copy), or its every row in a fresh PostgreSQL one."""
    monkeypatch.chdir(tmp_path)  # what a run leaves in its working folder (artifacts beside no file) stays here
    return _copy_of(request, tmp_path, OLD, "0003")


@pytest.fixture(params=["sqlite", "postgresql"])
def main_db(request, tmp_path, monkeypatch) -> str:
    """The database of main at 6a47297, as ``old_db``."""
    monkeypatch.chdir(tmp_path)
    return _copy_of(request, tmp_path, MAIN, "0004")


def copy_to_postgres(url: str, source: Path, revision: str) -> str:
    """Every row of the file ``source`` in the empty PostgreSQL database at ``url``, under the schemas that wrote
    them: skipsearch's tables as the revisions up to ``revision`` make them, without the version table (the old
    code kept none), checked against the file's."""
    new = create_engine(url)
    with new.begin() as conn:
        revisions.run(conn, revision)
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    new.dispose()
    optuna.storages.RDBStorage(url).engine.dispose()  # Optuna's, at today's alembic revision: the file's too
    old, new = create_engine(f"sqlite:///{source}"), create_engine(url)
    old_tables, new_tables = MetaData(), MetaData()
    old_tables.reflect(old)
    new_tables.reflect(new)
    assert sorted(old_tables.tables) == sorted(new_tables.tables)
    for name, table in old_tables.tables.items():  # the same columns: a faithful copy, not a conversion
        assert ({c.name: c.nullable for c in table.columns} == {c.name: c.nullable for c in
                                                               new_tables.tables[name].columns}), name
    with old.connect() as src, new.begin() as dst:
        for table in reversed(new_tables.sorted_tables):  # the rows today's code put there (versions) go
            dst.execute(table.delete())
        for table in new_tables.sorted_tables:  # parents before children
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
        for later in range(version + 1, 4):
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


def test_old_database_is_refused_by_a_reader_then_upgrades(old_db):
    before = snapshot(old_db)
    with pytest.raises(StorageError, match=r"older skipsearch .* `skipsearch upgrade --storage "):
        skipsearch.trials(old_db, "old-skip")  # a reader writes nothing: it says how to upgrade
    assert snapshot(old_db) == before
    upgrade = Store(old_db).schema_upgrade
    assert (upgrade.found, upgrade.stamped, upgrade.path()) == (None, "0003", ["0004", "0005", "0006"])
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
    before = legacy_frames(old_db)["skipsearch_trials"].query("study_name == 'old-dt'").set_index("trial_number")
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
    assert Store(old_db).schema_upgrade.path() == list(REVISIONS[version:])  # stamped at its version, upgraded
    result = skipsearch.run(spec, storage=old_db, trials=5)  # then resumed
    version_now, columns = schema_of(old_db)
    assert version_now == t.SCHEMA_VERSION == 4  # the old counter: an older skipsearch does not know 4
    assert columns.pop(VERSION_TABLE) == {"version_num"}
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


# --- revisions, and the database of main at 6a47297 -------------------------------------------------------------

def legacy_frames(url: str) -> dict[str, pd.DataFrame]:
    """Every row of the tables that held numbers before measurements, as the database's own driver gives them."""
    engine = create_engine(url)
    tables = MetaData()
    tables.reflect(engine, only=LEGACY_TABLES)
    with engine.connect() as conn:
        out = {name: pd.DataFrame([dict(r) for r in conn.execute(tables.tables[name].select()
                                                                 .order_by(tables.tables[name].c.id)).mappings()])
               for name in LEGACY_TABLES}
    engine.dispose()
    return out


def snapshot(url: str) -> dict[str, tuple]:
    """Every table of a database: its columns, unique keys and rows (what a rolled-back upgrade must leave)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        inspector = inspect(conn)
        out = {name: ([(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
                      sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)),
                      sorted(map(repr, conn.execute(text(f'SELECT * FROM "{name}"')).all())))
               for name in inspector.get_table_names()}
    engine.dispose()
    return out


STAGES = {"skipsearch_trials": "trial", "skipsearch_rungs": "rung", "skipsearch_steps": "step",
          "skipsearch_confirmations": "confirmation"}
NUMBERS = {"fid": ("target", "fid"), "kid": ("target", "kid"), "kid_std": ("target", "kid_std"),
           "source_fid": ("source", "fid"), "source_kid": ("source", "kid")}


def expected_measurements(frames: dict[str, pd.DataFrame]) -> dict[tuple, float]:
    """The measurement rows the legacy columns stand for, by key: every number that is not NULL."""
    extractor = {(r.study_name, r.trial_number): r.extractor for r in frames["skipsearch_trials"].itertuples()}
    out = {}
    for table, frame in frames.items():
        for r in frame.to_dict("records"):
            space = r.get("extractor") or extractor[(r["study_name"], r["trial_number"])]
            for column, (domain, metric) in NUMBERS.items():
                if column in r and not pd.isna(r[column]):
                    key = (r["study_name"], r["trial_number"], STAGES[table], r["n"], r.get("step", -1),
                           r.get("seed_set", -1), domain, metric, space)
                    out[key] = r[column]
    return out


def test_the_revisions_listed_are_the_script_directorys():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(FOLDER))
    walked = [s.revision for s in script.walk_revisions()]  # head first
    assert walked[::-1] == list(REVISIONS) and script.get_heads() == [HEAD]


def test_a_new_database_is_made_at_head_and_matches_the_tables(backend_url):
    store = Store(backend_url)
    assert store.schema_upgrade.path() == list(REVISIONS) and Store(backend_url).schema_upgrade is None
    engine = create_engine(backend_url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all() == [(HEAD,)]
        assert conn.execute(text("SELECT version FROM skipsearch_schema")).all() == [(t.SCHEMA_VERSION,)]
        inspector = inspect(conn)
        for table in t.metadata.tables.values():  # what the revisions made is what today's tables describe
            made = {c["name"]: (c["nullable"], type(c["type"]).__name__) for c in inspector.get_columns(table.name)}
            assert {n: nullable for n, (nullable, _) in made.items()} == {c.name: c.nullable for c in table.columns}
            uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table.name)}
            assert uniques == {tuple(c.name for c in u.columns) for u in table.constraints
                               if type(u).__name__ == "UniqueConstraint"}, table.name
    engine.dispose()
    store.close()


# what each legacy table's frame (``Store``'s) reads back of its dropped columns: numbers and Diff-Tuning's values
READ_BACK = {"skipsearch_trials": ("trials_frame", ("trial_number",),
                                   ("fid", "kid", "kid_std", "delta_fid", "source_fid", "source_kid", "weights_path",
                                    "weights_hash")),
             "skipsearch_rungs": ("rungs_frame", ("trial_number", "n"), ("fid", "kid")),
             "skipsearch_steps": ("steps_frame", ("trial_number", "step"), ("fid", "kid", "source_fid", "source_kid")),
             "skipsearch_confirmations": ("confirmations_frame", ("trial_number", "seed_set", "n"),
                                          ("fid", "kid", "kid_std", "source_fid", "source_kid", "train_seed"))}


def measurement_rows(url: str) -> dict[tuple, float]:
    store = Store(url, create=False)
    got = {(r.study_name, r.trial_number, r.stage, r.n, r.step, r.seed_set, r.domain, r.metric, r.extractor): r.value
           for study in ("old-skip", "old-dt") for r in store.measurements_frame(study).itertuples()}
    store.close()
    return got


def assert_reads_back(url: str, before: dict[str, pd.DataFrame]) -> None:
    """Every value of the dropped columns, as the old file held it, in today's frames: bit for bit, NULL as
    NaN (numbers) or None/NA (a study with no such value)."""
    store = Store(url, create=False)
    for table, (reader, keys, columns) in READ_BACK.items():
        for study, old in before[table].groupby("study_name"):
            new = getattr(store, reader)(study).set_index(list(keys))
            old = old.set_index(list(keys))
            assert sorted(new.index) == sorted(old.index), (table, study)
            for column in columns:
                if column not in new.columns:  # nothing of it in this study: every old value was NULL
                    assert old[column].isna().all(), (table, study, column)
                    continue
                want, got = old[column].reindex(new.index), new[column]
                assert (want.isna() == got.isna()).all(), (table, study, column)
                same = [w == g and type(w) is type(g) or float(w) == float(g) for w, g in
                        zip(want[want.notna()].tolist(), got[got.notna()].tolist())]
                assert all(same), (table, study, column, want.tolist(), got.tolist())
    store.close()


def test_main_6a47297_upgrades_and_keeps_every_number(main_db):
    before = legacy_frames(main_db)
    untouched = snapshot(main_db)
    with pytest.raises(StorageError, match="skipsearch upgrade"):  # a reader never writes: it says how to upgrade
        Store(main_db, create=False)
    assert snapshot(main_db) == untouched
    store = Store(main_db)
    upgrade = store.schema_upgrade
    assert (upgrade.found, upgrade.stamped, upgrade.path()) == (None, "0004", ["0005", "0006"])
    store.close()
    assert len(before["skipsearch_rungs"]) == 8 and len(before["skipsearch_steps"]) == 6
    got = measurement_rows(main_db)
    assert got == expected_measurements(before) and len(got) == 93  # exactly the numbers stored, bit for bit
    assert_reads_back(main_db, before)
    assert schema_of(main_db)[1]["skipsearch_trials"].isdisjoint({"fid", "source_fid", "weights_path"})
    trials = skipsearch.trials(main_db, "old-skip").set_index("trial_number")
    assert {n: round(trials.loc[n].fid, 6) for n in OLD_SKIP_FIDS} == OLD_SKIP_FIDS
    assert skipsearch.best(main_db, "old-dt").provenance.weights is not None


def test_a_number_written_beside_the_measurements_is_copied_or_refused(main_db):
    """A database at 0005 that an older skipsearch wrote to again has numbers in the old columns only: 0006
    copies them before dropping the columns. One that disagrees with its measurement row stops the upgrade."""
    engine = create_engine(main_db)
    with engine.begin() as conn:
        revisions.run(conn, "0005", stamp="0004")
        conn.execute(text("DELETE FROM skipsearch_measurements WHERE study_name = 'old-skip' AND trial_number = 2 "
                          "AND stage = 'trial' AND metric = 'fid'"))
        conn.execute(text("UPDATE skipsearch_measurements SET value = value + 1 WHERE study_name = 'old-dt' AND "
                          "trial_number = 2 AND stage = 'confirmation' AND domain = 'source' AND metric = 'fid' "
                          "AND seed_set = 0"))
    engine.dispose()
    before, untouched = legacy_frames(main_db), snapshot(main_db)
    with pytest.raises(StorageError, match="old-dt.* trial 2 has fid = .* in its confirmation row but .*nothing "
                                           "was changed"):
        Store(main_db)
    assert snapshot(main_db) == untouched
    engine = create_engine(main_db)
    with engine.begin() as conn:
        conn.execute(text("UPDATE skipsearch_measurements SET value = value - 1 WHERE study_name = 'old-dt' AND "
                          "trial_number = 2 AND stage = 'confirmation' AND domain = 'source' AND metric = 'fid' "
                          "AND seed_set = 0"))
    engine.dispose()
    assert Store(main_db).schema_upgrade.path() == ["0006"]
    assert measurement_rows(main_db) == expected_measurements(before)  # the deleted row is back
    assert_reads_back(main_db, before)


def test_main_6a47297_resumes_and_new_rows_carry_their_measurements(main_db):
    before = expected_measurements(legacy_frames(main_db))
    spec = parse_spec(tiny_spec_dict("old-skip", metric={"n": 128, "rungs": [64], "batch_size": 64},
                                     search={"trials": 4}, confirm={"top_k": 0}))
    skipsearch.run(spec, storage=main_db, trials=5)
    got = measurement_rows(main_db)
    assert {k: v for k, v in got.items() if k[:2] != ("old-skip", 4)} == before  # the old ones kept as they were
    assert {k[2] for k in got if k[:2] == ("old-skip", 4)} == {"trial", "rung"}  # the new trial's rows too


def test_a_newer_database_is_refused_by_writers_and_readers(main_db):
    Store(main_db).close()
    engine = create_engine(main_db)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    newer = rf"written by a newer skipsearch \(schema revision 0099, this one knows up to {HEAD}\); upgrade skipsearch"
    for create in (True, False):
        with pytest.raises(StorageError, match=newer):
            Store(main_db, create=create)


def test_a_failed_upgrade_leaves_the_database_as_it_was(old_db):
    """Schema 1 upgrades through every revision; the last one's copy of the numbers fails (a rung whose feature
    space is recorded nowhere), after the others added columns and tables: all of it is rolled back."""
    take_back_to(old_db, 1)
    engine = create_engine(old_db)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM skipsearch_trials WHERE study_name = 'old-skip' AND trial_number = 1"))
        conn.execute(text("DELETE FROM skipsearch_studies WHERE study_name = 'old-skip'"))
    engine.dispose()
    before = snapshot(old_db)
    with pytest.raises(StorageError, match="cannot upgrade the database: skipsearch_rungs .* trial 1"):
        Store(old_db)
    assert snapshot(old_db) == before
    assert schema_of(old_db)[0] == 1


OPEN = """
import sys, time
from skipsearch.storage import Store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
done = Store(sys.argv[1]).schema_upgrade
print(done.path() if done else "none")
"""


def test_two_processes_opening_an_old_database_at_once_both_go_on(main_db):
    start = f"{time.time() + 4:.3f}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, main_db, start], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert sorted(out.strip() for out, _ in outs) == ["['0005', '0006']", "none"]  # one upgraded, one found it done
    assert len(Store(main_db, create=False).measurements_frame("old-dt")) == 53  # copied once


def test_the_upgrade_command_upgrades_once_and_refuses_what_is_not_a_database(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(MAIN, path)
    url = f"sqlite:///{path}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "skipsearch", *args], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)

    first = cli("best", "old-skip", "--storage", url)
    assert first.returncode == 2 and f"skipsearch upgrade --storage {url}" in first.stderr, first.stderr
    done = cli("upgrade", "--storage", url)
    assert done.returncode == 0 and f"to {HEAD} (0005, 0006)" in done.stdout, done.stdout + done.stderr
    again = cli("upgrade", "--storage", url)
    assert again.returncode == 0 and "already at this skipsearch's schema" in again.stdout
    assert cli("best", "old-skip", "--storage", url).returncode == 0
    missing = cli("upgrade", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 2 and "no database at" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "none.db").exists()
