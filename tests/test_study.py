"""A whole study on a real SQLite file: baseline first, common seeds, resume, recovery, export, verify."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_spec_dict
from test_spec import cli

import skipsearch
from skipsearch.exchange import coeffile
from skipsearch.methods import parse_coefficients
from skipsearch.errors import UserError
from skipsearch.specfile import parse_spec
from skipsearch.search.recording import STALE_REASON
from skipsearch.search.driver import open_study


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny study, run once, shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{tmp / 'study.db'}"
    spec = parse_spec(tiny_spec_dict("shared"))
    result = skipsearch.run(spec, storage=url)
    return url, spec, result, tmp


def test_baseline_is_trial_zero_and_every_trial_uses_the_same_seeds(finished):
    url, spec, result, _ = finished
    frame = skipsearch.trials(url, spec.name)
    assert list(frame.trial_number) == [0, 1, 2, 3]
    base = frame.iloc[0]
    assert base.role == "baseline" and json.loads(base.coefficients_json) == {
        "family": "linear", "rho_top": 1.0, "rho_bottom": 1.0}
    assert base.delta_fid == 0.0
    assert set(frame.seed_start) == {0} and set(frame.n) == {64}
    assert (frame.delta_fid - (frame.fid - base.fid)).abs().max() < 1e-12
    row = frame.iloc[1]
    assert row.extractor == "skipsearch-digits" and row.nfe == 5 and len(row.model_hash) == 16
    assert len(row.ref_hash) == 16 and "torch" in json.loads(row.versions_json)


def test_optuna_storage_is_in_the_same_database(finished):
    url, spec, _, _ = finished
    study = optuna.load_study(study_name=spec.name, storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert study.trials[0].user_attrs["role"] == "baseline"
    frame = skipsearch.trials(url, spec.name)
    assert [t.value for t in study.trials] == list(frame.fid)


def test_confirmation_uses_heldout_seed_sets(finished):
    _, spec, result, _ = finished
    conf = result.confirmation
    assert set(conf.role) == {"baseline", "search"} and len(conf) == 2  # baseline + top-1
    assert (conf.seed_sets == 2).all() and (conf.n == 96).all()
    base = conf[conf.role == "baseline"].iloc[0]
    assert base.delta_fid == 0.0 and base.heldout_fid_std > 0  # different seed sets give different FIDs
    assert result.winner == int(conf[conf.role == "search"].trial_number.iloc[0])


@pytest.mark.parametrize("fmt", ["yaml", "json", "toml"])
def test_export_apply_reproduces_recorded_fid(finished, fmt):
    url, spec, result, tmp = finished
    path = skipsearch.export(url, spec.name, tmp / f"best.{fmt}")
    cf = coeffile.read(path)
    frame = skipsearch.trials(url, spec.name).set_index("trial_number")
    row = frame.loc[result.winner]
    assert cf.provenance.trial == result.winner
    assert cf.coefficients.model_dump_json() == row.coefficients_json  # exact round trip of the floats
    reproduced = skipsearch.verify(path)
    assert reproduced.recorded_fid == row.fid
    assert abs(reproduced.reproduced_fid - row.fid) <= 1e-6
    assert reproduced.reference_hash_match and reproduced.ok


def test_resume_continues_instead_of_starting_over(tmp_path):
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    spec = parse_spec(tiny_spec_dict("resume", search={"trials": 2}, confirm={"top_k": 0}))
    first = skipsearch.run(spec, storage=url)
    again = skipsearch.run(spec, storage=url, trials=4)
    assert list(again.trials.trial_number) == [0, 1, 2, 3]
    assert list(again.trials.fid[:2]) == list(first.trials.fid)
    assert (again.trials.role == "baseline").sum() == 1
    same = skipsearch.run(spec, storage=url, trials=4)  # budget reached: nothing new, nothing duplicated
    assert len(same.trials) == 4 and len(same.confirmation) == len(again.confirmation)


def test_killed_driver_trials_are_recovered_or_failed_on_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    spec = parse_spec(tiny_spec_dict("stale", search={"trials": 2}, confirm={"top_k": 0}))
    skipsearch.run(spec, storage=url)
    ctx = open_study(spec, url)
    orphan = ctx.study.ask()  # asked, never told: what a kill -9 leaves behind
    ctx.store.close()
    result = skipsearch.run(spec, storage=url, trials=4)
    study = optuna.load_study(study_name=spec.name, storage=url)
    states = {t.number: t.state for t in study.trials}
    assert optuna.trial.TrialState.RUNNING not in states.values()
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert study.trials[orphan.number].user_attrs["fail_reason"] == STALE_REASON
    failed = result.trials[result.trials.trial_number == orphan.number].iloc[0]
    assert failed.state == "FAIL" and failed.error == STALE_REASON
    # the killed trial does not count towards the budget: 4 evaluated trials, plus the FAIL one
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in states.values()) == 4 and len(states) == 5


def test_changed_science_on_an_existing_study_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'changed.db'}"
    skipsearch.run(parse_spec(tiny_spec_dict("changed", search={"trials": 1}, confirm={"top_k": 0})), storage=url)
    with pytest.raises(UserError, match="different metric"):
        skipsearch.run(parse_spec(tiny_spec_dict("changed", metric={"n": 80})), storage=url)


def test_cli_run_best_export(tmp_path):
    spec_path = tmp_path / "cli.yaml"
    # search seed 8: the race's best candidate, worse than the baseline, has rho_bottom 1.493, at the end of
    # [0.5, 1.5] (this machine, 2026-12-07): no win, so no note on the range
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict("cli", search={"trials": 2, "seed": 8})))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    proc = cli("run", str(spec_path), "--storage", url, "--trials", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_said = proc.stdout
    assert "Held-out race" in proc.stdout  # the default confirmation races
    assert re.search(r"(Winner|Best confirmed candidate, no win claimed): trial \d+ ", proc.stdout)
    proc = cli("best", "cli", "--storage", url)
    assert proc.returncode == 0 and "held-out N=96" in proc.stdout, proc.stderr
    best_said = proc.stdout
    out = tmp_path / "w.toml"
    proc = cli("export", "cli", "--storage", url, "--format", "toml", "-o", str(out))
    assert proc.returncode == 0 and out.exists(), proc.stderr
    chosen = skipsearch.best(url, "cli")
    judged = chosen.verdict  # judged once, and the same in best's provenance as in what it shows
    assert chosen.provenance.verdict.text == judged.text
    assert chosen.provenance.verdict.claimed_win == (judged.win and judged.trial == chosen.provenance.trial)
    # a claimed winner's rho within 2% of rho_range's width (0.02 here) of an end is named, by best and at the end
    # of the run; a candidate that won nothing is not (what lies beyond it is no question the study raised)
    def at_end(c):
        return [name for name, rho in (("rho_top", c.rho_top), ("rho_bottom", c.rho_bottom))
                if min(abs(rho - 0.5), abs(rho - 1.5)) <= 0.02]

    frame = skipsearch.trials(url, "cli")
    judged_rhos = parse_coefficients(frame[frame.trial_number == judged.trial].coefficients_json.iloc[0])
    named = at_end(judged_rhos) if judged.win else []
    assert [said.split(" = ")[0] for said in chosen.edges] == (named if chosen.provenance.trial == judged.trial
                                                               else [])
    assert ("widen the range to look" in run_said) == bool(named)
    assert ("widen the range to look" in best_said) == bool(chosen.edges)
    written = coeffile.read(out).provenance.verdict  # the file says what the study's verdict said of it
    assert (written.claimed_win, written.text) == (judged.win, judged.text)
    if not judged.win:  # said where the user looks: at the end of the run, and when the file is written
        assert "no win is claimed, so the model as it is (the baseline) stays" in run_said
        assert f"note: no win is claimed for trial {judged.trial}; the study's verdict: " in proc.stderr
    else:
        assert "export with: skipsearch export cli" in run_said and "note:" not in proc.stderr
    other = next(t for t in skipsearch.trials(url, "cli").trial_number if t != judged.trial)
    proc = cli("export", "cli", "--storage", url, "--trial", str(other), "-o", str(tmp_path / "o.json"))
    assert proc.returncode == 0 and f"no win is claimed for trial {other}" in proc.stderr  # not the one judged
    assert coeffile.read(tmp_path / "o.json").provenance.verdict.claimed_win is False
    proc = cli("best", "nosuch", "--storage", url)
    assert proc.returncode == 2 and "no study named 'nosuch'" in proc.stderr


def test_in_process_rungs_prune_with_successive_halving(tmp_path):
    url = f"sqlite:///{tmp_path / 'rungs.db'}"
    spec = parse_spec(tiny_spec_dict("rungs", metric={"n": 128, "rungs": [32], "batch_size": 128},
                                     search={"trials": 8, "seed": 2}, confirm={"top_k": 0}))
    result = skipsearch.run(spec, storage=url)
    study = optuna.load_study(study_name="rungs", storage=url)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and done and len(pruned) + len(done) == 8
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE  # the baseline is never stopped
    assert all(sorted(t.intermediate_values) == [32] for t in pruned)
    assert all(sorted(t.intermediate_values) == [32, 128] for t in done)
    frame = result.trials.set_index("trial_number")
    assert (frame[frame.state == "PRUNED"].n == 32).all() and (frame[frame.state == "COMPLETE"].n == 128).all()


def test_prune_savings_line_reports_measured_time(tmp_path):
    from skipsearch.terminal_tables import pruning_savings

    url = f"sqlite:///{tmp_path / 'save.db'}"
    spec = parse_spec(tiny_spec_dict("save", metric={"n": 128, "rungs": [32], "batch_size": 128},
                                     search={"trials": 6, "seed": 2}, confirm={"top_k": 0}))
    line = pruning_savings(skipsearch.run(spec, storage=url).trials)
    assert line is not None and "% saved" in line


def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path):
    proc = cli("run", "studies/demo-skip.yaml", "--storage", "postgresql://alice:s3cret@127.0.0.1:1/db",
               cwd=Path(__file__).parents[1])
    assert proc.returncode == 2 and "cannot open the database" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr and "alice:***@" in proc.stderr
    assert "Traceback" not in proc.stderr
