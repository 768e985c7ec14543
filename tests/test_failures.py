"""A trial's own failure is a FAIL with its reason; a bug stops the run with a traceback; chaos loses nothing.

Faults come from tests/chaos.py: a model that returns NaN, runs out of (CUDA) memory, hangs past the trial
timeout, or kills its Ray worker, and a model whose every call is a bug.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import chaos
import optuna
import pytest
import yaml
from conftest import tiny_spec_dict

import skipsearch
from skipsearch import deadline
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from kill_resume import kill_and_resume  # noqa: E402

CHAOS_CLI = [sys.executable, str(Path(__file__).parent / "chaos.py")]


@pytest.fixture
def chaos_models(monkeypatch):
    chaos.install()
    monkeypatch.setitem(chaos.ENABLED, "chaos", False)  # only the forced modes below misbehave
    monkeypatch.setattr(chaos, "FORCED", [])
    return chaos.FORCED


class SkippingClock:
    """The clock ``skipsearch.deadline`` reads: real monotonic time plus all that ``sleep`` skipped. Given to
    the chaos model as its ``time``, a hang moves this clock past the trial's deadline at once, so a hung
    trial is past any timeout however fast or slow the machine, and the other trials can have a timeout far
    beyond what any load makes of them, without the test waiting that long."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def sleep(self, seconds: float) -> None:
        self.skipped += seconds


def test_trial_errors_are_fail_with_their_reason_and_the_study_goes_on(tmp_path, chaos_models, monkeypatch):
    timeout_s = 60.0  # the ok trials take 0.1-0.2 s alone (the first also builds the evaluator): 2 s was too
    # little under a load of 4-6; the hang below is 10 timeouts long, on the deadline's clock only
    clock = SkippingClock()
    monkeypatch.setattr(deadline, "time", clock)
    monkeypatch.setattr(chaos, "time", clock)
    monkeypatch.setattr(chaos, "HANG_S", 10 * timeout_s)
    chaos_models.extend(["ok", "nan", "oom", "hang", "ok"])  # trials 0..4, one sampling run each
    spec = parse_spec(tiny_spec_dict("faults", model=chaos.section("chaos-digits"),
                                     search={"trials": 5, "trial_timeout_s": timeout_s}, confirm={"top_k": 1}))
    result = skipsearch.run(spec, storage=f"sqlite:///{tmp_path / 'f.db'}")
    rows = result.trials.set_index("trial_number")
    assert list(rows.state) == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE"]
    assert rows.loc[1].error.startswith("SampleError: non-finite values")
    assert rows.loc[2].error.startswith("OutOfMemoryError: chaos: CUDA out of memory")
    assert rows.loc[3].error.startswith("timeout: the trial ran longer than search.trial_timeout_s = 60 s")
    assert clock.skipped == 10 * timeout_s  # the one hang happened, on the deadline's clock
    study = optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp_path / 'f.db'}")
    assert all(t.user_attrs["evaluated"] for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert result.winner == 4  # the study went on and confirmed its completed trial
    verdict = result.verdict  # the same verdict as best's and the table's, on the object a script holds
    head = "Winner" if verdict.win else "Best confirmed candidate, no win claimed"
    assert verdict.trial == 4 and verdict.text.startswith(f"{head}: trial 4 ") and isinstance(verdict.win, bool)
    assert verdict.text == skipsearch.best(f"sqlite:///{tmp_path / 'f.db'}", "faults").verdict.text


def test_a_bug_stops_the_run_with_a_traceback_and_costs_no_budget(tmp_path):
    spec_path = tmp_path / "bug.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict("bug", model=chaos.section("chaos-bug-digits"))))
    url = f"sqlite:///{tmp_path / 'bug.db'}"
    proc = subprocess.run([*CHAOS_CLI, "run", str(spec_path), "--storage", url], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError: 'chaos: an injected bug'" in proc.stderr
    rows = Store(url, create=False).trials_frame("bug")
    assert list(rows.state) == ["FAIL"] and rows.error.iloc[0].startswith("skipsearch bug: KeyError")
    trial = optuna.load_study(study_name="bug", storage=url).trials[0]
    assert trial.user_attrs["evaluated"] is False  # not spent from the budget


@pytest.mark.usefixtures("ray_address")
def test_a_bug_on_a_ray_worker_stops_the_run_with_its_traceback(tmp_path, ray_address):
    spec_path = tmp_path / "raybug.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict("raybug", model=chaos.section("chaos-bug-digits"))))
    url = f"sqlite:///{tmp_path / 'rb.db'}"
    proc = subprocess.run([*CHAOS_CLI, "run", str(spec_path), "--storage", url, "--workers", "2",
                           "--cpus-per-trial", "0.5", "--address", ray_address], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "hit a bug in skipsearch" in proc.stderr and "KeyError: 'chaos: an injected bug'" in proc.stderr
    rows = Store(url, create=False).trials_frame("raybug")
    assert set(rows.state) == {"FAIL"} and rows.error.str.startswith("skipsearch bug").any()
    assert len(rows) <= 2 and not rows.evaluated.any()  # stopped at the first bug (the other trial in flight
    # is stopped too); none of them counts towards the budget


@pytest.mark.usefixtures("ray_address")
def test_chaos_on_two_ray_workers_with_the_driver_killed_five_times(tmp_path, ray_address):
    """Trials that raise, return NaN, hang past the timeout or kill their worker, and kill -9 of the driver
    5 times: every trial ends COMPLETE, PRUNED or FAIL with a reason, none RUNNING, nothing lost."""
    spec = tiny_spec_dict("chaos", model=chaos.section("chaos-digits"), metric={"n": 128, "rungs": [32],
                                                                           "batch_size": 128},
                          search={"trials": 16, "sampler": "tpe", "trial_timeout_s": 2.0},
                          confirm={"top_k": 1, "n": 64, "seed_sets": 1})
    spec_path = tmp_path / "chaos.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    db, log = tmp_path / "chaos.db", tmp_path / "chaos.log"
    rounds, summary = kill_and_resume(spec_path, "chaos", kills=5, workers=2, address=ray_address, seed=5, db=db,
                                      log=log, command=CHAOS_CLI)
    rows = Store(f"sqlite:///{db}", create=False).trials_frame("chaos")
    reasons = Counter(e.split(":")[0] for e in rows[rows.state == "FAIL"].error)
    text = log.read_text()
    print(f"\nchaos: {Counter(summary['states'].values())}; FAIL reasons {dict(reasons)}; "
          f"{text.count('retrying it')} worker(s) lost and retried; completed at each kill "
          f"{[r['completed_at_kill'] for r in rounds]}")
    assert summary["returncode"] == 0 and summary["running"] == 0, text[-3000:]
    assert set(summary["states"].values()) <= {"COMPLETE", "PRUNED", "FAIL"}
    assert rows[rows.state == "FAIL"].error.str.len().min() > 0  # every FAIL says why
    assert len(rows) == len(summary["states"])  # one row per trial: none recorded twice
    for r in rounds:  # every trial completed at any kill is still there, with the same value
        assert all(summary["values"].get(n) == v for n, v in r["values"].items())
    assert "Traceback" not in text
