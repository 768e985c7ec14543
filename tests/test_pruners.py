"""`skipsearch bench --pruners`: early-stopping rules replayed on the same trials through Optuna's pruners. The
replay must stop what the rule says and count what it spent; the trials' numbers must be the search's own."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import tiny_dt_spec_dict, tiny_spec_dict
from test_spec import cli

from skipsearch.bench.pruners import Evaluated, compare_pruners, replay
from skipsearch.evaluate import evaluator_for
from skipsearch.methods import Fidelity, method_for
from skipsearch.methods.sampled import eval_task
from skipsearch.methods.skip_tuning.schedules import LinearSkip
from skipsearch.specfile import load_spec

LADDER = (40, 80, 160)
CHUNK = 32  # 5 chunks of 160
HALVING = Fidelity(rule="halving", unit="samples", first=40, top=160, factor=2)


def _trial(number: int, level: float, role: str = "search", chunk_step: float = 0.0) -> Evaluated:
    """A made-up trial whose FIDs sit at ``level``: rungs fall with N as FIDs do; chunks vary a little."""
    return Evaluated(number=number, role=role, coefficients=LinearSkip(rho_top=1.0, rho_bottom=1.0 + number / 100),
                     rung_fids=tuple(level + 10 / n for n in LADDER),
                     chunk_fids=tuple(level + 5 + chunk_step * k for k in range(5)))


def test_wilcoxon_stops_a_trial_worse_on_every_chunk_once_it_can_and_never_the_baseline():
    trials = [_trial(0, 20.0, "baseline"), _trial(1, 10.0), _trial(2, 30.0), _trial(3, 9.0, chunk_step=0.1)]
    trials.append(Evaluated(number=4, role="baseline", coefficients=trials[0].coefficients,
                            rung_fids=(99.0, 99.0, 99.0), chunk_fids=(99.0,) * 5))  # worst, but a baseline
    r = replay("wilcoxon", trials, 2, HALVING, LADDER, CHUNK)
    # trial 0 (the baseline) is the incumbent when trial 1 comes; trial 1 then is, and trial 2 is worse on every
    # chunk: a one-sided signed-rank test on 4 paired chunks first reaches p = 1/16 < 0.1, so it stops after 4
    assert r.stopped == (2,)
    assert r.samples == 160 + 160 + 4 * CHUNK + 160 + 160
    assert r.top == (3, 1)  # the complete candidates, lowest FID at n first; baselines are never candidates


def test_halving_replays_the_studys_own_pruner():
    trials = [_trial(0, 20.0, "baseline"), _trial(1, 10.0), _trial(2, 30.0), _trial(3, 25.0), _trial(4, 5.0)]
    r = replay("halving", trials, 3, HALVING, LADDER, CHUNK)
    none = replay("none", trials, 3, HALVING, LADDER, CHUNK)
    assert none.stopped == () and none.samples == 5 * 160 and none.top == (4, 1, 3)
    # the worse half at a rung stops there; whatever stops, the samples are those up to its rung
    assert 2 in r.stopped and 4 not in r.stopped and 1 not in r.stopped and 0 not in r.stopped
    assert r.samples < none.samples and r.top[:2] == (4, 1)


def test_a_tiny_study_replays_its_real_trials(tmp_path):
    raw = tiny_spec_dict("pr", metric={"n": 160, "kid_subset_size": 32}, search={"trials": 8})
    path = tmp_path / "pr.yaml"
    path.write_text(yaml.safe_dump(raw))
    (r,) = compare_pruners(path, repeats=1, chunks=5)
    assert r.ladder == LADDER and r.chunk == CHUNK and len(r.trials) == 8
    assert r.trials[0].role == "baseline" and r.trials[0].coefficients.is_identity()
    assert r.replays["none"].samples == 8 * 160
    for rule in ("halving", "wilcoxon"):
        p = r.replays[rule]
        assert p.samples <= 8 * 160 and 0 not in p.stopped
        assert set(p.top) <= {t.number for t in r.trials if t.number not in p.stopped} - {0}
    # the FID each rule reads at n is the search's: the trial scored again by the evaluator a study uses
    spec = load_spec(path)
    task = eval_task(spec, n=160, seed_start=spec.metric.seed)
    ev = evaluator_for(task)
    best = r.trials[r.replays["none"].top[0]]
    with method_for(spec.kind).apply(ev.loaded.denoiser, best.coefficients, None):
        score = ev(task)
    assert score.fid == pytest.approx(best.fid, rel=1e-6)
    assert best.fid == min(t.fid for t in r.trials if t.role != "baseline")


def test_cli_writes_records_and_refuses_bad_input(tmp_path):
    spec = tmp_path / "pr.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict("pr", metric={"n": 160, "kid_subset_size": 32})))
    proc = cli("bench", "--pruners", "--spec", str(spec), "--repeats", "1", "--trials", "4", "--chunks", "5",
               "--json", "pr.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "repeat 0 wilcoxon:" in proc.stdout and "repeat 0 halving :" in proc.stdout
    records = {r["name"]: r for r in json.loads((tmp_path / "pr.json").read_text())}
    assert records["pruners, repeat 0, halving: search samples / no early stopping's"]["value"] <= 1
    assert "pruners, wilcoxon: repeats keeping no early stopping's winner" in records
    assert "pruners, repeat 0: 1/4" in proc.stderr or "trials at N=160: 1/4" in proc.stderr  # progress in a file
    for args, words in ((["--chunks", "50"], "--chunks"), (["--trials", "1"], "--trials")):
        proc = cli("bench", "--pruners", "--spec", str(spec), *args, cwd=tmp_path)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump(tiny_spec_dict("odd", metric={"n": 65, "kid_subset_size": 32})))
    proc = cli("bench", "--pruners", "--spec", str(odd), cwd=tmp_path)
    assert proc.returncode == 2 and "rungs" in proc.stderr and "Traceback" not in proc.stderr
    dt = tmp_path / "dt.yaml"
    dt.write_text(yaml.safe_dump(tiny_dt_spec_dict("dt")))
    proc = cli("bench", "--pruners", "--spec", str(dt), cwd=tmp_path)
    assert proc.returncode == 2 and "training-free" in proc.stderr
