"""A whole Diff-Tuning study on a real SQLite file: plain fine-tuning first, intermediate FIDs and pruning,
source FID, saved weights, held-out retraining, the Pareto front, export/verify/apply, and the benchmark."""

from __future__ import annotations

import json
import sqlite3

import optuna
import pytest
import torch
import yaml
from conftest import tiny_dt_spec_dict
from test_spec import cli

import skipsearch
from skipsearch.exchange import coeffile
from skipsearch.errors import UserError
from skipsearch.files import file_hash
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store

State = optuna.trial.TrialState


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dt")
    url = f"sqlite:///{tmp / 'dt.db'}"
    spec = parse_spec(tiny_dt_spec_dict("dt", weights_dir=str(tmp / "w"), search={"trials": 9}))
    return url, spec, skipsearch.run(spec, storage=url), tmp


def test_plain_fine_tuning_is_trial_zero_and_every_trial_has_source_fid(finished):
    url, spec, result, _ = finished
    frame = skipsearch.trials(url, spec.name)
    base = frame.iloc[0]
    coeffs = json.loads(base.coefficients_json)
    assert base.role == "baseline" and coeffs["s"] == 0 and coeffs["r"] == 0 and coeffs["steps"] == 6
    assert coeffs["lr"] == spec.finetune.lr and base.delta_fid == 0.0
    done = frame[frame.state == "COMPLETE"]
    assert done.source_fid.notna().all() and (done.source_fid > 0).all()
    assert len(set(done.fid.round(9))) == len(done)  # different recipes give different models
    from skipsearch.methods import describe

    assert describe(base.coefficients_json) == "plain fine-tuning: lr=0.001 steps=6"


def test_intermediate_fids_are_reported_and_weak_trials_pruned(finished):
    url, spec, _, _ = finished
    study = optuna.load_study(study_name=spec.name, storage=url)
    steps = Store(url).steps_frame(spec.name)
    for t in study.trials:
        assert 3 in t.intermediate_values, t.number
        mine = steps[steps.trial_number == t.number]
        assert mine[mine.step == 3].fid.iloc[0] == t.intermediate_values[3]
        if t.state == State.PRUNED:
            assert list(mine.step) == [3] and mine.source_fid.isna().all()
        else:
            assert t.state == State.COMPLETE and list(mine.step) == [3, 6]
    states = [t.state for t in study.trials]
    assert State.PRUNED in states, states  # median pruning after 5 start-up trials, seeded


def test_weights_are_saved_loadable_and_referenced(finished):
    url, spec, _, _ = finished
    frame = skipsearch.trials(url, spec.name)
    for row in frame.itertuples():
        if row.state != "COMPLETE":
            assert row.weights_path is None or pd_isna(row.weights_path)
            continue
        state = torch.load(row.weights_path, map_location="cpu", weights_only=True)
        assert file_hash(row.weights_path) == row.weights_hash
        assert set(state) == set(skipsearch.load_model("digits-0to4").denoiser.net.state_dict())
    study = optuna.load_study(study_name=spec.name, storage=url)
    assert study.trials[0].user_attrs["weights_path"] == frame.weights_path.iloc[0]


def pd_isna(value) -> bool:
    return value != value


def test_confirmation_retrains_with_new_training_seeds(finished):
    url, spec, result, _ = finished
    conf = Store(url).confirmations_frame(spec.name)
    assert set(conf.train_seed) == {spec.finetune.seed + 1, spec.finetune.seed + 2}
    assert conf.source_fid.notna().all()
    table = result.confirmation
    assert set(table.role) == {"baseline", "search"} and table.heldout_source_fid.notna().all()
    assert table[table.role == "baseline"].delta_fid.iloc[0] == 0.0


@pytest.mark.parametrize("fmt", ["yaml", "toml"])
def test_export_verify_and_apply_the_fine_tuned_weights(finished, fmt):
    url, spec, result, tmp = finished
    path = skipsearch.export(url, spec.name, tmp / f"best.{fmt}")
    cf = coeffile.read(path)
    row = skipsearch.trials(url, spec.name).set_index("trial_number").loc[cf.provenance.trial]
    assert cf.coefficients.family == "diff_tuning"
    assert cf.coefficients.model_dump_json() == row.coefficients_json
    assert cf.provenance.weights.sha256_16 == row.weights_hash
    assert cf.provenance.source.fid == row.source_fid
    again = skipsearch.verify(path)
    assert again.reproduced_fid == pytest.approx(row.fid, abs=1e-6) and again.ok
    model = skipsearch.load_model("digits-0to4").denoiser
    before = model.net.conv_out.weight.clone()
    with skipsearch.apply(model, path):
        assert not torch.equal(model.net.conv_out.weight, before)
    assert torch.equal(model.net.conv_out.weight, before)  # the pre-trained weights are back


def test_apply_refuses_weights_that_changed(finished, tmp_path):
    url, spec, _, _ = finished
    path = skipsearch.export(url, spec.name, tmp_path / "best.json", trial=0)
    doc = json.loads(path.read_text())
    doc["provenance"]["weights"]["sha256_16"] = "0123456789abcdef"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="differs from the recorded"):
        skipsearch.apply(skipsearch.load_model("digits-0to4").denoiser, path)


def test_multi_objective_study_shows_the_pareto_front(tmp_path):
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    spec = parse_spec(tiny_dt_spec_dict("mo", weights_dir=str(tmp_path / "w"), finetune={"eval_steps": []},
                                        search={"trials": 5, "objectives": ["target_fid", "source_fid"]},
                                        confirm={"top_k": 0}))
    result = skipsearch.run(spec, storage=url)
    study = optuna.load_study(study_name="mo", storage=url)
    assert len(study.directions) == 2
    assert sorted(t.number for t in study.best_trials) == sorted(result.pareto.trial_number)
    for t in study.trials:
        assert t.values == pytest.approx(list(result.trials.set_index("trial_number").loc[t.number,
                                                                                         ["fid", "source_fid"]]))
    proc = cli("best", "mo", "--storage", url)
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front" in proc.stdout and "source FID" in proc.stdout
    front = skipsearch.best(url, "mo").pareto_front
    assert [p.trial for p in front] == list(result.pareto.trial_number)


BAD = [
    ({"search": {"r_range": [0.0, 1.5]}}, "search.r_range", "less than 1"),
    ({"search": {"s_range": [0.5, 2.0]}}, "search", "must start at 0"),
    ({"metric": {"rungs": [32]}}, "(top level)", "use finetune.eval_steps"),
    ({"finetune": {"eval_steps": [6]}}, "(top level)", "eval_steps must stay below"),
    ({"finetune": {"stepz": 6}}, "finetune.stepz", "unknown field"),
    ({"kind": "dream_tuning"}, "kind", "must be one of"),
]


@pytest.mark.parametrize("patch, field, reason", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_diff_tuning_spec_names_field_and_reason(tmp_path, patch, field, reason):
    with pytest.raises(UserError) as err:
        parse_spec(tiny_dt_spec_dict("bad", **patch))
    assert field in str(err.value) and reason in str(err.value)


def test_old_database_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    """A database made by schema 1 (before Diff-Tuning) opens, is upgraded in place, and loses nothing: its
    numbers are measurement rows now, read back as the frame's columns."""
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE skipsearch_schema (version INTEGER PRIMARY KEY);
        INSERT INTO skipsearch_schema VALUES (1);
        CREATE TABLE skipsearch_trials (id INTEGER PRIMARY KEY, study_name VARCHAR(256) NOT NULL,
            trial_number INTEGER NOT NULL, role VARCHAR(16) NOT NULL, state VARCHAR(16) NOT NULL,
            coefficients_json TEXT NOT NULL, fid FLOAT, kid FLOAT, kid_std FLOAT, delta_fid FLOAT,
            n INTEGER NOT NULL, seed_start INTEGER NOT NULL, sampler_json TEXT NOT NULL, nfe INTEGER NOT NULL,
            model_id VARCHAR(128) NOT NULL, model_hash VARCHAR(64), extractor VARCHAR(128) NOT NULL,
            ref_hash VARCHAR(64), versions_json TEXT NOT NULL, wall_s FLOAT, error TEXT,
            created_at DATETIME NOT NULL, UNIQUE (study_name, trial_number));
        INSERT INTO skipsearch_trials (study_name, trial_number, role, state, coefficients_json, fid, n, seed_start,
            sampler_json, nfe, model_id, extractor, versions_json, created_at)
            VALUES ('old', 0, 'baseline', 'COMPLETE', '{}', 1.5, 64, 0, '{}', 5, 'm', 'e', '{}', '2026-01-01');
        CREATE TABLE skipsearch_confirmations (id INTEGER PRIMARY KEY, study_name VARCHAR(256) NOT NULL,
            trial_number INTEGER NOT NULL, seed_set INTEGER NOT NULL, seed_start INTEGER NOT NULL,
            n INTEGER NOT NULL, fid FLOAT NOT NULL, kid FLOAT, kid_std FLOAT, extractor VARCHAR(128) NOT NULL,
            ref_hash VARCHAR(64), wall_s FLOAT, created_at DATETIME NOT NULL,
            UNIQUE (study_name, trial_number, seed_set, n));
    """)
    con.commit()
    con.close()
    store = Store(f"sqlite:///{db}")
    frame = store.trials_frame("old")
    assert len(frame) == 1 and frame.fid.iloc[0] == 1.5 and frame.delta_fid.iloc[0] == 0.0
    assert store.confirmations_frame("old").empty
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version FROM skipsearch_schema").fetchone()[0] == 4
        assert con.execute("SELECT stage, metric, value FROM skipsearch_measurements").fetchall() == [
            ("trial", "fid", 1.5)]


def test_bench_prints_the_diff_tuning_line(tmp_path):
    path = tmp_path / "dt.yaml"
    path.write_text(yaml.safe_dump(tiny_dt_spec_dict("b", weights_dir=str(tmp_path / "w"))))
    proc = cli("bench", "--spec", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "trial / bare (steps/s)" in out and "share" in out
    ratio = float(out.split("trial / bare (steps/s)")[1].split()[0])
    assert 0.2 < ratio < 5
    assert not list(tmp_path.glob("*.db"))
