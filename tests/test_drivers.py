"""Several drivers on one study, resumes and kills: no repeats, one baseline, the budget study-wide, nothing lost.

The two-driver tests run the real CLI twice against one database, on SQLite and on a real PostgreSQL
server; the recovery tests drive two ``Driver`` objects by hand to check who may take over whose trial.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_spec_dict
from sqlalchemy import update

from skipsearch.search.coordination import trial_item
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store, urls
from skipsearch.storage import tables as t
from skipsearch.results import Rung, Score
from skipsearch.search.recording import STALE_REASON, record_result
from skipsearch.search.budget import counted, reserve
from skipsearch.search.driver import open_study, run_trial

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from kill_resume import kill_and_resume  # noqa: E402

ROOT = Path(__file__).parents[1]


def driver(spec: Path, url: str, trials: int, log: Path) -> subprocess.Popen:
    """``skipsearch run`` as a user starts it, the URL (and its password) in $SKIPSEARCH_STORAGE."""
    env = os.environ | {"SKIPSEARCH_STORAGE": url, "OMP_NUM_THREADS": "1"}  # two drivers share 2 cores
    return subprocess.Popen([sys.executable, "-m", "skipsearch", "run", str(spec), "--trials", str(trials)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=log.parent)


def check_shared_study(url: str, name: str, budget: int, spec: dict, logs: list[Path]) -> dict:
    """The invariants of a study that several drivers ran; returns its figures."""
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    rows = Store(url, create=False).trials_frame(name).set_index("trial_number")
    evaluated = [x for x in trials if x.state.is_finished() and x.user_attrs.get("evaluated", True)]
    baselines = rows[(rows.role == "baseline") & (rows.state == "COMPLETE")]
    coefficient_sets = list(rows.loc[[x.number for x in evaluated]].coefficients_json)
    for x in trials:  # Optuna and skipsearch agree on every trial, and on every completed value
        assert rows.loc[x.number].state == x.state.name
        if x.state == optuna.trial.TrialState.COMPLETE:
            assert rows.loc[x.number].fid == x.value
    text = "".join(log.read_text() for log in logs)
    conf = Store(url, create=False).confirmations_frame(name)
    expected = (spec["confirm"]["top_k"] + 1) * spec["confirm"]["seed_sets"]
    figures = {"evaluated": len(evaluated), "baselines": len(baselines), "running": sum(
        x.state == optuna.trial.TrialState.RUNNING for x in trials),
        "repeated": len(coefficient_sets) - len(set(coefficient_sets)), "tracebacks": text.count("Traceback"),
        "confirmations": len(conf), "held_out_evaluations": text.count("held-out  trial"),
        "per_driver": [log.read_text().count("\ntrial ") for log in logs]}
    print(f"\n{name} on {url.split(':')[0]}: {figures}")
    for log, ran in zip(logs, figures["per_driver"]):  # each driver's last word: the study's state and its share
        said = f"done: {budget}/{budget} trials of study {name} evaluated, {ran} by this driver"
        assert ran == 0 or said in log.read_text()
    assert figures["evaluated"] == budget and figures["baselines"] == 1 and figures["running"] == 0
    assert figures["repeated"] == 0 and figures["tracebacks"] == 0
    assert figures["confirmations"] == expected == figures["held_out_evaluations"]  # each computed once
    assert len(conf.drop_duplicates(["trial_number", "seed_set", "n"])) == expected
    if urls.password(url):  # the password is never printed, and the hint names $SKIPSEARCH_STORAGE instead
        assert urls.password(url) not in text and '--storage "$SKIPSEARCH_STORAGE"' in text
    return figures


def wait_for_trials(proc: subprocess.Popen, log: Path, count: int, timeout_s: float = 300) -> None:
    """Until the driver writing ``log`` has finished ``count`` search trials (its lines say so as they happen,
    also into a file): a second driver then joins a study that is already under way, whatever the machine's
    speed, without a fixed sleep."""
    end = time.monotonic() + timeout_s
    while log.read_text(errors="replace").count("\ntrial ") < count:
        assert proc.poll() is None, f"the first driver ended before {count} trials: {log.read_text()}"
        assert time.monotonic() < end, f"no {count} trials in {timeout_s} s: {log.read_text()}"
        time.sleep(0.5)


@pytest.mark.parametrize("head_start, budget", [(0, 14), (3, 20)], ids=["together", "joins-under-way"])
def test_two_drivers_share_one_study(backend_url, tmp_path, head_start, budget):
    """Two drivers at once, and a second joining after the first has evaluated the baseline and some trials."""
    spec = tiny_spec_dict("shared2", metric={"n": 256, "batch_size": 256}, sampler={"steps": 10},
                          search={"sampler": "tpe", "seed": 3}, confirm={"top_k": 2, "n": 128, "seed_sets": 2})
    spec_path = tmp_path / "shared2.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = driver(spec_path, backend_url, budget, logs[0])
    if head_start:
        wait_for_trials(first, logs[0], head_start)
    second = driver(spec_path, backend_url, budget, logs[1])
    assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0, logs[0].read_text() + logs[1].read_text()
    figures = check_shared_study(backend_url, "shared2", budget, spec, logs)
    assert all(n > 0 for n in figures["per_driver"])  # both drivers ran trials


def test_schema_created_by_several_processes_at_once(backend_url):
    """Four processes open one new database at the same moment: each gets the tables, none fails."""
    code = ("import sys; from skipsearch.storage import Store; "
            "from skipsearch.search.driver import open_optuna_storage; "
            "Store(sys.argv[1]); open_optuna_storage(sys.argv[1]); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, backend_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert all(out.strip() == "ok" for out, _ in outs)


def test_resume_extend_and_kills_never_repeat_nor_lose(tmp_path):
    """3 trials, extended to 8 with 5 kill -9 at random moments: no coefficient set twice, nothing lost."""
    spec = tiny_spec_dict("resume-kills", metric={"n": 256, "batch_size": 256}, sampler={"steps": 10},
                          search={"trials": 3, "sampler": "tpe"},
                          confirm={"top_k": 1, "n": 64, "seed_sets": 1})
    spec_path = tmp_path / "rk.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    db = tmp_path / "rk.db"
    first = subprocess.run([sys.executable, "-m", "skipsearch", "run", str(spec_path), "--storage",
                            f"sqlite:///{db}"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    rounds, summary = kill_and_resume(spec_path, "resume-kills", kills=5, workers=0, seed=11, db=db, trials=8,
                                      log=tmp_path / "rk.log")
    print(f"\nresume + 5 kills: {[r['completed_at_kill'] for r in rounds]} completed at each kill; final "
          f"{summary['completed']} COMPLETE, {list(summary['states'].values()).count('FAIL')} FAIL (killed in "
          f"flight), {summary['running']} RUNNING, {summary['repeated']} repeated coefficient sets")
    assert summary["returncode"] == 0 and summary["running"] == 0 and summary["repeated"] == 0
    assert summary["evaluated"] == 8
    for r in rounds:  # every trial completed at any kill is still there, with the same value
        assert all(summary["values"].get(n) == v for n, v in r["values"].items())
    assert "Traceback" not in (tmp_path / "rk.log").read_text()


@pytest.fixture
def two_drivers(tmp_path):
    """One study, two drivers in this process (as two machines would be, but sharing a pid)."""
    spec = parse_spec(tiny_spec_dict("owners", search={"trials": 6}, confirm={"top_k": 0}))
    url = f"sqlite:///{tmp_path / 'owners.db'}"
    a, b = open_study(spec, url, echo=lambda line: None), open_study(spec, url, echo=lambda line: None)
    yield a, b, url
    a.close()
    b.close()


def _pretend(ctx, **values) -> None:
    """Rewrite this driver's row, as if it ran elsewhere or had died."""
    with ctx.store.begin() as conn:
        conn.execute(update(t.drivers).where(t.drivers.c.driver_id == ctx.driver.id).values(**values))


def test_a_live_drivers_trial_is_never_recovered(two_drivers):
    a, b, _ = two_drivers
    mine = reserve(a, 6)  # a's trial, in flight
    assert reserve(b, 6).number != mine.number  # b asks its own trial and leaves a's alone
    assert a.study.trials[mine.number].state == optuna.trial.TrialState.RUNNING
    _pretend(a, machine="another-host", heartbeat_at=a.store.db_now())  # alive on another machine
    reserve(b, 6)
    assert a.study.trials[mine.number].state == optuna.trial.TrialState.RUNNING
    assert counted(b)[1] == 3  # three trials in flight, all owned by live drivers
    assert run_trial(a, mine).state == "COMPLETE"  # a finishes its own trial normally


def test_a_dead_drivers_trial_is_recovered_once(two_drivers):
    a, b, _ = two_drivers
    mine = reserve(a, 6)
    _pretend(a, machine="another-host", heartbeat_at=a.store.db_now() - timedelta(minutes=5))  # silent 5 min
    reserve(b, 6)
    frozen = b.study.trials[mine.number]
    assert frozen.state == optuna.trial.TrialState.FAIL and frozen.user_attrs["fail_reason"] == STALE_REASON
    assert frozen.user_attrs["evaluated"] is False  # a killed trial does not count towards the budget
    assert b.store.holder("owners", trial_item(mine.number)) is None
    # the presumed-dead driver comes back: its late result is refused, not recorded twice
    score = Score(fid=1.0, kid=0.0, kid_std=0.0, n=64, seed_start=0, nfe=5, extractor="skipsearch-digits",
                  ref_hash=a.hashes["metric.reference"], model_id="embedded-digits", model_hash=a.hashes["model"],
                  wall_s=0.1)  # the study's own files: only the lateness is wrong with it
    late = Rung(score=score, progress=64, final=True, wall_s=0.1)
    assert record_result(a, mine.number, "search", "{}", late) == "LOST"
    assert b.store.trial("owners", mine.number).state == "FAIL"


def test_a_dead_processs_trial_is_recovered_at_once_on_this_machine(two_drivers):
    a, b, _ = two_drivers
    mine = reserve(a, 6)
    _pretend(a, pid=_dead_pid())  # same machine, process gone: no need to wait for the grace period
    reserve(b, 6)
    assert b.study.trials[mine.number].state == optuna.trial.TrialState.FAIL


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_study_lock_of_a_dead_driver_is_taken_over(two_drivers):
    a, b, _ = two_drivers
    assert a.store.try_claim("owners", "lock", a.driver.id)
    _pretend(a, pid=_dead_pid())
    start = time.monotonic()
    assert reserve(b, 6) is not None  # not blocked by the dead holder's lock
    assert time.monotonic() - start < 10
