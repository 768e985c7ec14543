"""One contract, two databases: every test here runs on SQLite and on a real PostgreSQL server (``backend_url``).

First the store's contract (schema, studies, typed records, claims, frames, delete), then the public verbs end to
end with the URL given only through ``$SKIPSEARCH_STORAGE``, as a user with a password would. What several
drivers do together is in ``test_drivers.py``; a database made by an older skipsearch in ``test_migration.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import optuna
import pandas as pd
import pytest
from conftest import TRIALS_COLUMNS, tiny_spec_dict
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

import skipsearch
from skipsearch import frames
from skipsearch.errors import StorageError, UserError
from skipsearch.exchange import coeffile
from skipsearch.methods import parse_coefficients
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights
from skipsearch.methods.skip_tuning.schedules import LinearSkip, PerLevelSkip
from skipsearch.search.stored_spec import stored_form
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store, urls
from skipsearch.storage import tables as t
from skipsearch.storage.migrations import HEAD
from skipsearch.storage.records import ConfirmationRow, RungRow, StepRow, TrialRow

STUDY = "contract"


def trial_row(number: int, study: str = STUDY, **values) -> TrialRow:
    base = dict(study_name=study, trial_number=number, role="search", state="COMPLETE",
                coefficients_json=LinearSkip(rho_top=1.25, rho_bottom=0.75).model_dump_json(), n=64, seed_start=0,
                sampler_json='{"name": "heun"}', nfe=5, model_id="embedded-digits", extractor="skipsearch-digits",
                versions_json="{}", fid=17.747196123456789, kid=0.5, kid_std=0.01)
    return TrialRow(**base | values)


@pytest.fixture
def store(backend_url):
    s = Store(backend_url)
    s.save_study(STUDY, {"name": STUDY, "metric": {"extractor": "skipsearch-digits"}})  # where a rung's numbers are
    yield s
    s.close()


def _race(fn, count: int) -> list:
    """fn(0) .. fn(count - 1), each in its own thread, all let go at the same moment; their results."""
    start, results = threading.Barrier(count), [None] * count

    def one(i: int) -> None:
        start.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())
    finally:
        engine.dispose()


# --- the schema -----------------------------------------------------------------------------------------------

def test_a_reader_creates_nothing_and_the_schema_version_is_explicit(backend_url):
    sqlite_file = urls.sqlite_path(urls.parse(backend_url)) if backend_url.startswith("sqlite") else None
    with pytest.raises(StorageError):
        Store(backend_url, create=False)  # nothing there yet: refused, and nothing made
    if sqlite_file is not None:
        assert not sqlite_file.exists()
    else:
        assert _tables(backend_url) == []

    Store(backend_url).close()
    Store(backend_url).close()  # opening again adds nothing
    assert set(t.metadata.tables) <= set(_tables(backend_url))
    engine = create_engine(backend_url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT version FROM skipsearch_schema")).all() == [(t.SCHEMA_VERSION,)]
        for table in t.metadata.tables.values():
            assert {c["name"] for c in inspect(conn).get_columns(table.name)} == {c.name for c in table.columns}
        assert conn.execute(text("SELECT version_num FROM skipsearch_alembic_version")).all() == [(HEAD,)]
        conn.execute(text("UPDATE skipsearch_alembic_version SET version_num = '0005'"))  # one revision behind
    engine.dispose()
    with pytest.raises(StorageError, match="older skipsearch .*`skipsearch upgrade --storage "):
        Store(backend_url, create=False)  # a reader never upgrades: it says how
    engine = create_engine(backend_url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT version_num FROM skipsearch_alembic_version")).all() == [("0005",)]
        conn.execute(text(f"UPDATE skipsearch_alembic_version SET version_num = '{HEAD}'"))
    engine.dispose()
    Store(backend_url, create=False).close()  # at the head: read as it is


# --- studies --------------------------------------------------------------------------------------------------

def test_a_study_is_registered_once_when_drivers_race(backend_url):
    Store(backend_url).close()
    stores = [Store(backend_url) for _ in range(6)]
    got = _race(lambda i: stores[i].save_study("race", {"name": "race", "driver": i}), len(stores))
    assert all(g == got[0] for g in got) and got[0]["name"] == "race"  # every driver got the first spec
    assert stores[0].study_spec("race") == got[0]
    assert stores[0].save_study("race", {"name": "race", "driver": 99}) == got[0]  # later ones too
    assert list(stores[0].studies_frame().study_name) == ["race"]
    for s in stores:
        s.close()


def test_winner_is_stored_per_study(store):
    assert store.winner(STUDY) is None and store.winner("absent") is None
    store.set_winner(STUDY, 3)
    assert store.winner(STUDY) == 3


# --- typed records --------------------------------------------------------------------------------------------

def test_trials_round_trip_as_typed_records(store):
    full = trial_row(2, model_hash="a" * 16, ref_hash="b" * 16, wall_s=1.5, error=None,
                     references={("source", "fid"): 30.125, ("source", "kid"): 0.75},
                     extras={"weights_path": "/w/trial-0002.pt", "weights_hash": "c" * 64}, evaluated=True)
    bare = trial_row(1, role="baseline", state="FAIL", fid=None, kid=None, kid_std=None, error="NaN samples",
                     evaluated=False)
    assert store.record_trial(full) and store.record_trial(bare)
    assert store.trial(STUDY, 2) == full and store.trial(STUDY, 1) == bare  # every field, None and False kept
    assert store.trial(STUDY, 3) is None and store.trial("other", 2) is None
    with pytest.raises(IntegrityError):  # the same trial twice is a bug, and it is let through as one
        store.record_trial(full)
    frame = store.trials_frame(STUDY)
    columns = [c.name for c in t.trials.columns]  # the numbers, references and extras where the old table had them
    at = columns.index("coefficients_json") + 1
    columns[at:at] = ["fid", "kid", "kid_std", "delta_fid"]
    at = columns.index("evaluated")
    columns[at:at] = ["source_fid", "source_kid", "weights_path", "weights_hash"]
    assert list(frame.columns) == columns
    assert list(frame.trial_number) == [1, 2] and frame.fid.iloc[1] == 17.747196123456789  # exact double


def test_rungs_steps_and_confirmations_round_trip(store):
    for row in (RungRow(study_name=STUDY, trial_number=1, n=128, fid=12.5, kid=0.25, wall_s=0.5),
                RungRow(study_name=STUDY, trial_number=1, n=64, fid=14.5, kid=0.5, wall_s=0.25),
                StepRow(study_name=STUDY, trial_number=1, step=6, n=64, fid=11.0, kid=0.1, wall_s=2.0,
                        references={("source", "fid"): 21.0, ("source", "kid"): 0.2}),
                StepRow(study_name=STUDY, trial_number=1, step=3, n=64, fid=13.0, kid=0.3, wall_s=1.0,
                        references={("source", "fid"): 20.0, ("source", "kid"): 0.4})):
        store.record_rung(row, extractor="skipsearch-digits")
    rungs, steps = store.rungs_frame(STUDY), store.steps_frame(STUDY)
    assert list(rungs.n) == [64, 128] and list(rungs.fid) == [14.5, 12.5]
    assert list(steps.step) == [3, 6] and list(steps.source_fid) == [20.0, 21.0]
    with pytest.raises(IntegrityError):
        store.record_rung(RungRow(study_name=STUDY, trial_number=1, n=64, fid=1.0), extractor="skipsearch-digits")

    rows = [ConfirmationRow(study_name=STUDY, trial_number=num, seed_set=j, seed_start=10_000 + 96 * j, n=96,
                            fid=17.0 + num + j / 4, extractor="skipsearch-digits", kid=0.5, kid_std=0.1,
                            ref_hash="r" * 16, wall_s=0.2, extras={"train_seed": 7 + j} if num else {})
            for num in (3, 0) for j in (1, 0)]
    for row in rows:
        assert store.record_confirmation(row)
    assert store.has_confirmation(STUDY, 3, 1, 96) and not store.has_confirmation(STUDY, 3, 1, 128)
    frame = store.confirmations_frame(STUDY)
    assert list(zip(frame.trial_number, frame.seed_set)) == [(0, 0), (0, 1), (3, 0), (3, 1)]
    assert frame.set_index(["trial_number", "seed_set"]).fid.to_dict() == {(r.trial_number, r.seed_set): r.fid
                                                                           for r in rows}
    assert frame.train_seed.dtype == "Int64" and frame.train_seed.isna().tolist() == [True, True, False, False]
    assert frame.train_seed.dropna().tolist() == [7, 8]  # a method's extra, where it kept one, as it was
    with pytest.raises(IntegrityError):
        store.record_confirmation(rows[0])


# --- drivers and claims ---------------------------------------------------------------------------------------

def test_claims_are_exclusive_released_only_by_their_holder_and_guard_writes(store):
    assert store.try_claim(STUDY, "trial:1", "driver-a", 1)
    assert not store.try_claim(STUDY, "trial:1", "driver-b", 1)
    assert store.holder(STUDY, "trial:1") == "driver-a" and store.holder(STUDY, "trial:2") is None
    assert store.try_claim(STUDY, "confirm:1:0:96", "driver-b", 1)
    assert [c["item"] for c in store.claims(STUDY, "trial:")] == ["trial:1"] and len(store.claims(STUDY)) == 2

    assert store.record_trial(trial_row(1), claim=("trial:1", "driver-a"))  # written while its claim is held
    store.release(STUDY, "trial:1", "driver-b")  # not b's to release
    assert store.holder(STUDY, "trial:1") == "driver-a"
    store.release(STUDY, "trial:1", "driver-a")
    assert store.try_claim(STUDY, "trial:2", "driver-b", 2)  # b takes trial 2 over from a presumed-dead a
    assert not store.record_trial(trial_row(2), claim=("trial:2", "driver-a"))  # a's late write is refused
    assert store.trial(STUDY, 2) is None
    late = ConfirmationRow(study_name=STUDY, trial_number=1, seed_set=0, seed_start=0, n=96, fid=1.0, extractor="x")
    assert not store.record_confirmation(late, claim=("confirm:1:0:96", "driver-a"))
    assert store.confirmations_frame(STUDY).empty


def test_drivers_register_beat_and_stop_on_the_databases_clock(store):
    now = store.db_now()
    assert now.tzinfo is not None and abs(now - datetime.now(timezone.utc)) < timedelta(minutes=1)
    store.register_driver(driver_id="driver-a", study_name=STUDY, machine="host", pid=4711, proc_start=123)
    store.try_claim(STUDY, "lock", "driver-a")
    store.try_claim(STUDY, "trial:5", "driver-a", 5)
    store.heartbeat("driver-a")
    (row,) = store.drivers(STUDY)
    assert row["pid"] == 4711 and row["stopped_at"] is None
    assert row["started_at"].tzinfo is not None and row["heartbeat_at"] >= row["started_at"]
    store.stop_driver("driver-a")
    (row,) = store.drivers(STUDY)
    assert row["stopped_at"] >= row["heartbeat_at"] and store.claims(STUDY) == []  # its claims went with it


def test_one_claim_has_one_holder_however_many_race_for_it(backend_url):
    stores = [Store(backend_url) for _ in range(6)]
    for item in ("lock", "trial:1", "confirm:1:0:96"):
        taken = _race(lambda i, item=item: stores[i].try_claim("race", item, f"driver-{i}"), len(stores))
        won = [i for i, ok in enumerate(taken) if ok]
        assert len(won) == 1 and stores[0].holder("race", item) == f"driver-{won[0]}"
    for s in stores:
        s.close()


# --- frames and delete ----------------------------------------------------------------------------------------

def test_studies_frame_counts_by_state_and_delete_removes_one_study(store):
    store.save_study("other", {"name": "other"})
    for number, state in enumerate(("COMPLETE", "COMPLETE", "PRUNED", "FAIL")):
        store.record_trial(trial_row(number, state=state))
    store.record_trial(trial_row(0, study="other"))
    store.record_rung(RungRow(study_name=STUDY, trial_number=0, n=32, fid=1.0), extractor="x")
    store.record_confirmation(ConfirmationRow(study_name=STUDY, trial_number=0, seed_set=0, seed_start=0, n=96,
                                              fid=1.0, extractor="x"))
    store.register_driver(driver_id="d", study_name=STUDY, machine="host", pid=1, proc_start=None)
    store.try_claim(STUDY, "lock", "d")
    frame = store.studies_frame().set_index("study_name")
    assert list(frame.index) == [STUDY, "other"]
    assert frame.loc[STUDY, ["complete", "pruned", "fail"]].tolist() == [2, 1, 1]
    assert frame.loc["other", ["complete", "pruned", "fail"]].tolist() == [1, 0, 0]
    assert pd.notna(frame.loc[STUDY, "created_at"])

    # trials, rung, confirmation, driver, claim, study, and the records' numbers as measurements (a trial's three)
    assert store.delete_study(STUDY) == 4 + 1 + 1 + 1 + 1 + 1 + (4 * 3 + 1 + 1)
    assert store.study_spec(STUDY) is None and store.trials_frame(STUDY).empty and store.drivers(STUDY) == []
    assert list(store.studies_frame().study_name) == ["other"] and len(store.trials_frame("other")) == 1
    assert store.delete_study(STUDY) == 0


# --- the public readers' frames -------------------------------------------------------------------------------

def test_trials_have_one_column_per_coefficient_and_nan_where_they_do_not_parse(store):
    url = store.url
    store.record_trial(trial_row(0, role="baseline", coefficients_json=LinearSkip().model_dump_json()))
    store.record_trial(trial_row(1, state="FAIL", evaluated=False, fid=None,
                                 coefficients_json='{"incomplete_params": {"rho_top": 0.9}}'))
    store.record_trial(trial_row(2))
    frame = skipsearch.trials(url, STUDY)
    extra = ["family", "rho_top", "rho_bottom"]
    assert list(frame.columns) == list(TRIALS_COLUMNS) + extra
    assert frame.rho_top.tolist()[0::2] == [1.0, 1.25] and frame.rho_bottom.iloc[2] == 0.75
    assert frame.loc[1, extra].isna().all()  # a recovered trial's partial parameters are not coefficients
    assert frame.fid.dtype == "float64" and str(frame.created_at.dtype).endswith("UTC]")
    assert frame.evaluated.fillna(True).tolist() == [True, False, True]  # NULL: counted (rows before schema 3)

    store.save_study("levels", {"name": "levels"})
    store.record_trial(trial_row(0, study="levels", coefficients_json=PerLevelSkip(rho=(0.5, 1.0, 1.5))
                                 .model_dump_json()))
    assert skipsearch.trials(url, "levels")[["rho_0", "rho_1", "rho_2"]].iloc[0].tolist() == [0.5, 1.0, 1.5]
    store.save_study("dt", {"name": "dt"})
    store.record_trial(trial_row(0, study="dt", coefficients_json=DiffTuningWeights(s=2.0, steps=6)
                                 .model_dump_json()))
    dt = skipsearch.trials(url, "dt")
    assert list(dt.columns[-7:]) == ["family", "s", "s_prime", "r", "lam", "lr", "steps"]
    assert dt.s.iloc[0] == 2.0 and dt.steps.iloc[0] == 6


def test_a_coefficient_named_like_a_column_is_prefixed():
    frame = pd.DataFrame({"rho_top": [5.0], "coefficients_json": [LinearSkip(rho_top=1.5).model_dump_json()]})
    out = frames._with_coefficient_columns(frame, "coefficients_json")
    assert list(out.columns) == ["rho_top", "coefficients_json", "family", "coef_rho_top", "rho_bottom"]
    assert out.rho_top.iloc[0] == 5.0 and out.coef_rho_top.iloc[0] == 1.5


def test_an_unconfirmed_study_has_an_empty_confirmation_frame_with_its_columns(store):
    spec = parse_spec(tiny_spec_dict("unconfirmed"))
    store.save_study("unconfirmed", stored_form(spec))
    frame = skipsearch.confirmations(store.url, "unconfirmed")
    assert frame.empty and list(frame.columns) == list(frames.CONFIRMATION_COLUMNS)
    raw = skipsearch.confirmations(store.url, "unconfirmed", per_seed_set=True)
    assert raw.empty and {"seed_set", "fid", "role", "coefficients_json"} <= set(raw.columns)


# --- the public verbs, end to end, the URL only in $SKIPSEARCH_STORAGE --------------------------------------------

def _cli(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skipsearch", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, stdin=subprocess.DEVNULL, timeout=300)


def test_public_verbs_end_to_end_from_the_environment(backend_url, tmp_path, monkeypatch):
    monkeypatch.setenv(urls.STORAGE_ENV, backend_url)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)  # the default sqlite:///skipsearch.db would land here: it must not
    shown, secret = urls.shown(backend_url), urls.password(backend_url)
    spec = parse_spec(tiny_spec_dict("e2e", search={"trials": 3}))
    result = skipsearch.run(spec)
    assert result.storage == shown

    frame = skipsearch.trials(None, "e2e")
    assert list(frame.columns) == list(TRIALS_COLUMNS) + ["family", "rho_top", "rho_bottom"]
    assert len(frame) == 3 and (frame.state == "COMPLETE").all() and frame.family.eq("linear").all()
    for row in frame.itertuples():
        c = parse_coefficients(row.coefficients_json)
        assert (row.rho_top, row.rho_bottom) == (c.rho_top, c.rho_bottom)

    conf = skipsearch.confirmations(None, "e2e")
    judged = f"heldout_fid_debiased@{spec.metric.extractor}"  # what the race (the default) judged, as reported
    assert list(conf.columns) == list(frames.CONFIRMATION_COLUMNS) + [judged, "family", "rho_top", "rho_bottom"]
    assert conf.race_status.notna().all() and conf[judged].notna().all()
    assert list(conf.role) == ["baseline", "search"] and (conf.n == 96).all() and (conf.seed_sets == 2).all()
    searched = conf.iloc[1]
    assert searched.delta_fid_low < searched.delta_fid < searched.delta_fid_high
    raw = skipsearch.confirmations(None, "e2e", per_seed_set=True)
    assert len(raw) == 4 and set(raw.role) == {"baseline", "search"}
    assert raw.groupby("trial_number").fid.mean().to_dict() == pytest.approx(
        conf.set_index("trial_number").heldout_fid.to_dict())

    won = skipsearch.best(None, "e2e")
    assert won.provenance.trial == result.winner == int(searched.trial_number)
    assert won.provenance.storage == shown
    path = skipsearch.export(None, "e2e", tmp_path / "best.yaml")
    assert coeffile.read(path).coefficients == won.coefficients == parse_coefficients(searched.coefficients)
    studies = skipsearch.studies(None).set_index("study_name")
    assert studies.loc["e2e", "complete"] == 3

    for reader in (skipsearch.trials, skipsearch.confirmations, skipsearch.best):
        with pytest.raises(UserError) as err:
            reader(None, "nope")
        assert "'nope'" in str(err.value) and shown in str(err.value)

    env = dict(os.environ)  # what monkeypatch set, as a user's shell would hand it on
    listed = _cli("studies", env=env, cwd=tmp_path)
    unknown = _cli("best", "nope", env=env, cwd=tmp_path)
    deleted = _cli("delete", "e2e", "--yes", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "e2e" in listed.stdout, listed.stderr
    assert unknown.returncode == 2 and unknown.stderr.splitlines() == [f"error: no study named 'nope' in {shown}"]
    assert deleted.returncode == 0 and "deleted study 'e2e'" in deleted.stdout, deleted.stderr
    with pytest.raises(UserError, match="no study named 'e2e'"):
        skipsearch.trials(None, "e2e")
    assert "e2e" not in optuna.get_all_study_names(backend_url)

    assert not (tmp_path / "skipsearch.db").exists()
    if secret:
        text_out = "".join(p.stdout + p.stderr for p in (listed, unknown, deleted)) + path.read_text()
        assert secret not in text_out
