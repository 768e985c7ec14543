"""kill -9 the driver at random moments, resume by study name, and check that nothing was lost.

    python scripts/kill_resume.py SPEC --kills 10 [--address RAY_ADDRESS] [--workers 2] [--seed 0] [--trials K]

Each round starts ``skipsearch run SPEC --workers K`` (in-process with ``--workers 0``) as a subprocess,
waits until at least one more trial has been recorded, sleeps a random 0-3 s, and sends SIGKILL. After the
last kill one run goes to the end. Printed per round: trials completed at the kill and RUNNING ones; at the
end, completed trials lost or changed and coefficient sets evaluated more than once.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _states(db: Path, study: str) -> dict[int, tuple[str, float | None]]:
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=60) as conn:
        try:
            rows = conn.execute("SELECT t.number, t.state, v.value FROM trials t JOIN studies s USING (study_id) "
                                "LEFT JOIN trial_values v ON v.trial_id = t.trial_id WHERE s.study_name = ?",
                                (study,)).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return {}
    return {int(n): (state, value) for n, state, value in rows}


def _coefficients(db: Path, study: str) -> list[str]:
    """The coefficient sets of the trials that were evaluated (COMPLETE or PRUNED), one entry per trial."""
    with sqlite3.connect(db, timeout=60) as conn:
        return [c for (c,) in conn.execute("SELECT coefficients_json FROM skipsearch_trials WHERE study_name = ? "
                                           "AND state IN ('COMPLETE', 'PRUNED')", (study,))]


def _driver(spec: Path, db: Path, workers: int, address: str | None, trials: int | None,
            log: Path | None, command: list[str] | None = None) -> subprocess.Popen:
    cmd = [*(command or [sys.executable, "-m", "skipsearch"]), "run", str(spec), "--storage", f"sqlite:///{db}"]
    if workers:
        cmd += ["--workers", str(workers), "--cpus-per-trial", "0.5"]
    if address:
        cmd += ["--address", address]
    if trials:
        cmd += ["--trials", str(trials)]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)


def kill_and_resume(spec: Path, study: str, kills: int, workers: int = 2, address: str | None = None,
                    seed: int = 0, db: Path | None = None, timeout: float = 300, trials: int | None = None,
                    log: Path | None = None, command: list[str] | None = None) -> tuple[list[dict], dict]:
    """``command`` starts the CLI (default ``python -m skipsearch``); the tests pass a wrapper that adds
    fault-injecting models."""
    rng = random.Random(seed)
    db = db or Path(tempfile.mkdtemp()) / "killed.db"
    rounds = []
    for k in range(kills):
        before = {n for n, (s, _) in _states(db, study).items() if s in ("COMPLETE", "PRUNED")}
        proc, start = _driver(spec, db, workers, address, trials, log, command), time.time()
        while time.time() - start < timeout and proc.poll() is None:
            done = {n for n, (s, _) in _states(db, study).items() if s in ("COMPLETE", "PRUNED")}
            if len(done - before) >= 1:
                break
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 3.0))
        finished_early = proc.poll() is not None
        if not finished_early:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        snapshot = _states(db, study)
        rounds.append({"round": k + 1, "completed_at_kill": sum(s == "COMPLETE" for s, _ in snapshot.values()),
                       "running_at_kill": sum(s == "RUNNING" for s, _ in snapshot.values()),
                       "finished_before_kill": finished_early, "values": {n: v for n, (s, v) in snapshot.items()
                                                                         if s == "COMPLETE"}})
    final = _driver(spec, db, workers, address, trials, log, command)
    final.wait(timeout=timeout * 2)
    end = _states(db, study)
    evaluated = _coefficients(db, study)
    summary = {"returncode": final.returncode, "completed": sum(s == "COMPLETE" for s, _ in end.values()),
               "evaluated": sum(s in ("COMPLETE", "PRUNED") for s, _ in end.values()),
               "running": sum(s == "RUNNING" for s, _ in end.values()), "finished": len(end),
               "values": {n: v for n, (s, v) in end.items() if s == "COMPLETE"},
               "states": {n: s for n, (s, _) in end.items()},
               "repeated": len(evaluated) - len(set(evaluated))}
    return rounds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers; 0 runs the trials in-process")
    parser.add_argument("--address")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    import yaml

    study = yaml.safe_load(args.spec.read_text())["name"]
    rounds, summary = kill_and_resume(args.spec, study, args.kills, args.workers, args.address, args.seed,
                                      trials=args.trials)
    print("round  completed-at-kill  RUNNING-at-kill  lost-since-previous")
    seen: dict[int, float] = {}
    for r in rounds:
        lost = [n for n, v in seen.items() if r["values"].get(n) != v]
        print(f"{r['round']:5d}  {r['completed_at_kill']:17d}  {r['running_at_kill']:15d}  {len(lost):19d}")
        seen = r["values"]
    lost = [n for n, v in seen.items() if summary["values"].get(n) != v]
    states = list(summary["states"].values())
    print(f"after the final run: {summary['completed']} COMPLETE, {states.count('PRUNED')} PRUNED, "
          f"{states.count('FAIL')} FAIL (killed in flight), {summary['running']} RUNNING; "
          f"{summary['evaluated']} evaluated trials; {len(lost)} completed trial(s) lost or changed; "
          f"{summary['repeated']} repeated coefficient set(s); exit code {summary['returncode']}")


if __name__ == "__main__":
    main()
