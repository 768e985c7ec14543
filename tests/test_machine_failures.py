"""When the machine fails a run, not the trial and not skipsearch: SIGTERM, an unwritable artifact folder, a full
disk. Each is one message (exit 143 for SIGTERM, 2 otherwise), no trial is left RUNNING, and a rerun continues
without repeating or losing a trial. A resumed study's progress never passes its total.

The failures are real: a real SIGTERM and SIGKILL to a real ``skipsearch run``; an artifact folder whose path runs
through a regular file (ENOTDIR: the tests run as root, whom permission bits do not stop); a weights file whose
temporary name is a symlink to /dev/full (ENOSPC on write).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_dt_spec_dict, tiny_spec_dict

import skipsearch
from skipsearch import interrupts, progress
from skipsearch.errors import FileWriteError, Terminated, UserError
from skipsearch.methods import method_for
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store

State = optuna.trial.TrialState


def states(url: str, study: str) -> dict[int, State]:
    return {t.number: t.state for t in optuna.load_study(study_name=study, storage=url).trials}


def running_trial(db: Path, study: str) -> int | None:
    """A trial RUNNING in Optuna's tables right now (read with sqlite3: no skipsearch code in the way)."""
    if not db.exists():
        return None
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            row = conn.execute("SELECT t.number FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = ? "
                               "AND t.state = 'RUNNING'", (study,)).fetchone()
        except sqlite3.OperationalError:  # tables not created yet
            return None
    return None if row is None else int(row[0])


def signalled_run(spec_path: Path, db: Path, sig: signal.Signals, log: Path) -> tuple[subprocess.Popen, int]:
    """``skipsearch run`` as a subprocess, sent ``sig`` while one of its trials runs; (process, that trial)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "skipsearch", "run", str(spec_path), "--storage",
                                 f"sqlite:///{db}"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    number = None
    while number is None and proc.poll() is None and time.monotonic() < deadline:
        number = running_trial(db, spec_path.stem)
        time.sleep(0.05)
    assert number is not None, f"no trial ran: {log.read_text()[-3000:]}"
    time.sleep(0.1)  # inside the trial (a trial here takes most of a second, or more)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc, number


DEAD_DRIVER = """
import json, os, signal, sys
from skipsearch.search.driver import open_study
from skipsearch.search.budget import reserve
from skipsearch.specfile import parse_spec
spec = parse_spec(json.loads(sys.argv[1]))
trial = reserve(open_study(spec, sys.argv[2], echo=lambda line: None), spec.search.trials)
print(trial.number, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def dead_driver_with_a_trial(spec: dict, url: str) -> int:
    """What SIGKILL leaves mid-trial: a second interpreter joins the study as a driver, reserves (asks and claims)
    a trial, and kills itself with SIGKILL. Returns the trial's number. (Not a fork of pytest: a fork of a process
    with threads, Ray's or a library's, can deadlock in the child on a lock held by a thread that did not follow.)"""
    done = subprocess.run([sys.executable, "-c", DEAD_DRIVER, json.dumps(spec), url], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == -signal.SIGKILL and done.stdout.strip().isdigit(), (done.returncode, done.stderr[-2000:])
    return int(done.stdout.strip())


def test_sigterm_records_the_trial_in_flight_and_a_resume_continues_with_honest_progress(tmp_path, monkeypatch,
                                                                                         capsys):
    """SIGTERM (kill, Slurm) mid-trial: exit 143 and one line, the trial FAIL and not evaluated, nothing RUNNING.
    Then a driver killed by SIGKILL with a trial in flight (RUNNING, claimed by a dead driver), and a resume: the
    trial is recovered, the study ends with its budget of evaluated trials, none repeated or lost, and its progress
    counts the study's evaluated trials up to the budget, never past it (it printed 38/37 when the dead driver's
    trial was counted as in flight)."""
    budget = 2
    spec = tiny_spec_dict("termed", search={"trials": budget}, confirm={"top_k": 0})
    spec_path, db, log = tmp_path / "termed.yaml", tmp_path / "termed.db", tmp_path / "run.log"
    spec_path.write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{db}"

    proc, number = signalled_run(spec_path, db, signal.SIGTERM, log)
    text = log.read_text()
    assert proc.returncode == 143, text[-3000:]
    assert "terminated (SIGTERM): every completed trial is saved; run the same command again to continue." in text
    assert "Traceback" not in text
    after_term = states(url, "termed")
    assert State.RUNNING not in after_term.values(), after_term
    row = Store(url, create=False).trial("termed", number)
    if row is not None:  # the signal may land just after the trial was recorded; if in flight, it is FAIL:
        assert row.state != "FAIL" or (row.evaluated is False and row.error.startswith("terminated (SIGTERM)"))
    values = {t.number: t.value for t in optuna.load_study(study_name="termed", storage=url).trials
              if t.state == State.COMPLETE}

    killed = dead_driver_with_a_trial(spec, url)
    assert states(url, "termed")[killed] == State.RUNNING

    monkeypatch.setattr(progress, "on_terminal", lambda: False)  # lines, as in a log file
    monkeypatch.setenv(progress.ENV, "0.05")
    skipsearch.run(parse_spec(spec), storage=url)
    counts = [(int(n), int(total)) for n, total in
              re.findall(r"study termed: (\d+)/(\d+) trials", capsys.readouterr().err)]
    assert counts and all(n <= total == budget for n, total in counts), counts
    assert counts[-1] == (budget, budget), counts

    final = optuna.load_study(study_name="termed", storage=url).trials
    assert State.RUNNING not in {t.state for t in final}
    assert final[killed].state == State.FAIL and final[killed].user_attrs["evaluated"] is False
    assert sum(t.state == State.COMPLETE for t in final) == budget  # interrupted trials cost no budget
    assert all(final[n].value == v for n, v in values.items())  # nothing completed was lost or redone
    coefficients = [tuple(sorted(t.params.items())) for t in final if t.state == State.COMPLETE]
    assert len(set(coefficients)) == len(coefficients)  # nothing evaluated twice


def test_an_unwritable_artifact_folder_is_refused_before_the_study_is_stored(tmp_path, monkeypatch):
    """$SKIPSEARCH_ARTIFACTS under a regular file (ENOTDIR): refused by ``open_study``, nothing stored (the CLI
    prints the message and exits 2, as for every UserError)."""
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("SKIPSEARCH_ARTIFACTS", str(tmp_path / "a-file" / "artifacts"))
    url = f"sqlite:///{tmp_path / 'art.db'}"
    with pytest.raises(UserError, match=rf"the artifact folder {re.escape(str(tmp_path / 'a-file' / 'artifacts'))} "
                                        r"cannot be written \(Not a directory\); set \$SKIPSEARCH_ARTIFACTS to a "
                                        r"writable folder"):
        skipsearch.run(parse_spec(tiny_spec_dict("art", search={"trials": 2}, confirm={"top_k": 0})), storage=url)
    assert not (tmp_path / "art.db").exists()  # no study row, no Optuna study: not even a database


def test_an_artifact_folder_that_fails_mid_run_ends_the_run_cleanly_and_a_rerun_continues(tmp_path, monkeypatch):
    """The folder is replaced by a regular file between trial 0 and trial 1 (a disk unmounted, a folder removed):
    trial 1's numbers are recorded and told, its pictures are not, the run stops with one message, and once the
    folder is back a rerun finishes the study."""
    folder = tmp_path / "pictures"
    monkeypatch.setenv("SKIPSEARCH_ARTIFACTS", str(folder))
    url = f"sqlite:///{tmp_path / 'mid.db'}"
    spec = parse_spec(tiny_spec_dict("mid", search={"trials": 3}, confirm={"top_k": 0}))
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("trial   0 "):  # between trials: the folder becomes unusable
            shutil.rmtree(folder)
            folder.write_text("the folder is gone")

    with pytest.raises(FileWriteError, match=r"trial 1 is recorded \(COMPLETE\), but its pictures for "
                                             r"optuna-dashboard could not be written: Not a directory"):
        skipsearch.run(spec, storage=url, echo=echo)
    assert states(url, "mid") == {0: State.COMPLETE, 1: State.COMPLETE}  # nothing RUNNING, nothing lost
    assert list(Store(url, create=False).trials_frame("mid").state) == ["COMPLETE", "COMPLETE"]

    folder.unlink()
    result = skipsearch.run(spec, storage=url)
    assert list(result.trials.trial_number) == [0, 1, 2] and set(result.trials.state) == {"COMPLETE"}


def test_a_full_disk_while_writing_fine_tuned_weights_stops_the_run_with_one_message(tmp_path):
    """ENOSPC for real: the weights file's temporary name (``files.atomic_write``) is a symlink to /dev/full."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this machine")
    url = f"sqlite:///{tmp_path / 'full.db'}"
    spec = parse_spec(tiny_dt_spec_dict("full", weights_dir=str(tmp_path / "weights"), search={"trials": 2},
                                        finetune={"steps": 2, "eval_steps": []},
                                        confirm={"top_k": 0}))
    target = method_for(spec.kind).artifact(spec, 0)
    target.parent.mkdir(parents=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.symlink_to("/dev/full")
    with pytest.raises(UserError, match=rf"cannot write {re.escape(str(target))}: No space left on device; free "
                                        r"some space"):
        skipsearch.run(spec, storage=url)
    assert not tmp.exists() and not target.exists()  # nothing half-written left behind
    study = optuna.load_study(study_name="full", storage=url)
    assert [t.state for t in study.trials] == [State.FAIL]
    assert study.trials[0].user_attrs["evaluated"] is False  # not spent from the budget
    row = Store(url, create=False).trial("full", 0)
    assert row.state == "FAIL" and row.error.startswith(f"stopped: cannot write {target}: No space left on device")



def test_the_sigterm_handler_is_installed_only_where_it_is_safe_and_is_put_back():
    """Main thread and default action only; it raises once (the bookkeeping after the first SIGTERM is not cut
    short by a second); the default action is back afterwards, and a program's own handler is never replaced."""
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with interrupts.sigterm_as_interrupt() as installed:
            assert installed
            with pytest.raises(Terminated) as caught:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs at the next bytecode; never reached
            assert isinstance(caught.value, KeyboardInterrupt) and interrupts.exit_code(caught.value) == 143
            os.kill(os.getpid(), signal.SIGTERM)  # ignored while the first one is handled
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        results = []
        worker = threading.Thread(target=lambda: results.append(interrupts.sigterm_as_interrupt().__enter__()))
        worker.start()
        worker.join()
        assert results == [False] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # off the main thread

        def own(signum, frame):
            return None

        signal.signal(signal.SIGTERM, own)
        with interrupts.sigterm_as_interrupt() as installed:
            assert not installed and signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, before)
