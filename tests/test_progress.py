"""Progress of long work (skipsearch.progress): a tqdm bar counting samples on a terminal, plain flushed lines
with counts and an ETA at least every $SKIPSEARCH_PROGRESS_S seconds without one, silence when switched off."""

from __future__ import annotations

import copy
import fcntl
import gc
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import tiny_spec_dict

from skipsearch import progress
from skipsearch.progress import ENV, Progress

ROOT = Path(__file__).parents[1]

# A real generate() on the embedded model; each network evaluation sleeps ``delay`` s longer, so one batch
# (Heun, 3 steps: 5 evaluations) outlasts the progress interval and only the line thread can keep lines coming.
GENERATE = """
import sys, time
from skipsearch.diffusion.generation import SamplerConfig, generate
from skipsearch.models import load_model

n, batch, delay, progress = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
model = load_model("embedded-digits")
info = model.info

def slow(*args, **kwargs):
    time.sleep(delay)
    return model.denoiser(*args, **kwargs)

images = generate(slow, range(n), (info.img_channels, info.resolution, info.resolution), SamplerConfig(steps=3),
                  batch_size=batch, progress=progress)
print(tuple(images.shape))
"""

# A whole tiny study, as skipsearch.run runs it (the spec as JSON in argv[1], the database URL in argv[2]).
STUDY = """
import json, sys
import skipsearch
from skipsearch.specfile import parse_spec

skipsearch.run(parse_spec(json.loads(sys.argv[1])), storage=sys.argv[2])
"""

ETA = r"ETA (unknown|\d[\d.]* s)"
COUNT = r"(\d[\d,]*)/{total} {unit} \((\d+)%\)"


def env(interval: str | None) -> dict[str, str]:
    out = os.environ | {"OMP_NUM_THREADS": "1"}
    out.pop(ENV, None)
    return out if interval is None else out | {ENV: interval}


def generate_args(n: int, batch: int, delay: float, on: bool) -> list[str]:
    return [sys.executable, "-c", GENERATE, str(n), str(batch), str(delay), "1" if on else "0"]


@pytest.fixture
def lines_mode(monkeypatch):
    """In-process tests see line mode whether or not pytest's stderr is a terminal (pytest -s)."""
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    monkeypatch.setattr(progress, "_warned", set())
    yield
    assert not progress._LINES._open(), "a test left progress open"


def test_lines_without_a_terminal_count_samples_with_an_eta_at_least_every_interval():
    """stderr to a pipe (not a tty): lines in samples, one at least every 0.1 s although a batch takes ~0.5 s."""
    every, batch, n = 0.1, 8, 32
    proc = subprocess.Popen(generate_args(n, batch, 0.1, True), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env(str(every)), cwd=ROOT)
    arrivals = [(time.monotonic(), line.decode().rstrip("\n")) for line in iter(proc.stderr.readline, b"")]
    out = proc.stdout.read().decode()
    assert proc.wait(timeout=120) == 0, [line for _, line in arrivals]
    assert out.strip() == f"({n}, 1, 16, 16)"
    lines = [line for _, line in arrivals]
    running = [re.fullmatch(rf"sampling: {COUNT.format(total=n, unit='samples')}, \d[\d.]* s elapsed, {ETA}", line)
               for line in lines[:-1]]
    assert all(running) and len(running) >= 5, lines
    assert re.fullmatch(rf"sampling: {n}/{n} samples \(100%\), done in \d[\d.]* s", lines[-1]), lines
    counts = [int(m.group(1)) for m in running]
    assert counts == sorted(counts) and {c % batch for c in counts} == {0} and max(counts) >= 3 * batch, lines
    assert any(m.group(3) != "unknown" for m in running), lines  # an ETA once a batch is done
    gaps = [b - a for (a, _), (b, _) in zip(arrivals, arrivals[1:])]
    assert max(gaps) < every + 0.3, gaps  # a batch takes ~0.5 s: without the line thread, gaps would be that


def test_progress_false_is_silent():
    proc = subprocess.run(generate_args(16, 8, 0.0, False), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env("0.01"), cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(16, 1, 16, 16)"
    assert proc.stderr == ""


def test_a_bad_interval_is_one_warning_not_a_traceback():
    proc = subprocess.run(generate_args(16, 8, 0.0, True), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env("soon"), cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == f"warning: ${ENV}='soon' is not a positive number of seconds; progress lines every 30 s instead"
    assert sum("warning" in line for line in lines) == 1
    assert lines[-1].startswith("sampling: 16/16 samples (100%), done in")


def _on_a_terminal(args: list[str], columns: int = 150) -> tuple[int, str]:
    """Run ``args`` with stderr on a pseudo-terminal of the given width; (exit status, what it showed)."""
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=side,
                            env=env("0.01"), cwd=ROOT)
    os.close(side)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return proc.wait(timeout=120), shown.decode(errors="replace")


def test_on_a_terminal_the_bar_counts_samples_not_batches():
    code, shown = _on_a_terminal(generate_args(40, 16, 0.05, True))  # 40 samples in 3 batches
    assert code == 0, shown
    counts = [(int(n), int(total)) for n, total in re.findall(r"sampling: +\d+%\|[^|]*\| (\d+)/(\d+) samples", shown)]
    assert {total for _, total in counts} == {40} and {16, 32} <= {n for n, _ in counts}, shown
    assert "samples/s" in shown and not re.search(r"\b\d/3\b", shown), shown  # no count of batches
    assert "ETA" not in shown and "elapsed" not in shown, shown  # a bar, not lines


@pytest.mark.parametrize("race, held_out", [(True, r"held-out race: \d/4 evaluations \(at most\)"),
                                            (False, r"held-out confirmation: \d/4 evaluations")],
                         ids=["race", "fixed"])
def test_a_whole_study_in_a_log_file_reports_trials_samples_and_evaluations(tmp_path, race, held_out):
    """As under nohup: stdout and stderr in one file, no terminal. The trial lines stay whole, in-trial sampling
    reports (nested in the study's count) and so does the held-out confirmation, raced (the default) or fixed."""
    spec = tiny_spec_dict("logged", search={"trials": 2}, confirm={"race": race})
    log = tmp_path / "nohup.out"
    with open(log, "wb") as out:
        proc = subprocess.run([sys.executable, "-c", STUDY, json.dumps(spec), f"sqlite:///{tmp_path / 's.db'}"],
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env("0.01"),
                              cwd=tmp_path, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = text.splitlines()
    trials = [line for line in lines if line.startswith("trial ")]
    assert len(trials) == 2 and all(re.fullmatch(r"trial +\d+ +COMPLETE .*FID.*s", t) for t in trials), trials
    assert not [line for line in lines if "FID" in line and ("ETA" in line or "elapsed" in line)]  # not interleaved
    study = [line for line in lines if line.startswith("study logged: ")]
    assert any(re.fullmatch(r"study logged: 1/2 trials \(50%\), \d[\d.]* s elapsed, ETA \d[\d.]* s", s) for s in study)
    assert study[-1].startswith("study logged: 2/2 trials (100%), done in"), study
    nested = [line for line in lines if re.match(r"\[study logged [01]/2 trials\] sampling: \d+/64 samples", line)]
    assert nested, lines
    held = [line for line in lines if re.match(held_out, line)]
    assert held and re.match(rf"{held_out} \(100%\), done in", held[-1]), held  # one look, at the 2nd set: all 4
    assert all(re.search(ETA, h) for h in held[:-1]), held


def test_nested_work_speaks_only_at_the_interval_and_says_where_it_is(lines_mode, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "60")
    with Progress(3, "study t", "trials") as outer:
        with Progress(10, "sampling", "samples") as inner:
            inner.update(10)  # quick nested work: no line of its own
        outer.update()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(rf"study t: 1/3 trials \(33%\), \d[\d.]* s elapsed, {ETA}", lines[0])
    assert re.fullmatch(r"study t: 1/3 trials \(33%\), ended after \d[\d.]* s", lines[1])

    monkeypatch.setenv(ENV, "0.05")
    with Progress(3, "study t", "trials"):
        with Progress(100, "sampling", "samples") as inner:
            inner.update(40)
            time.sleep(0.3)  # long nested work: the line thread speaks for it, inside the study
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3, lines
    assert all(re.fullmatch(rf"\[study t 0/3 trials\] sampling: 40/100 samples \(40%\), \d[\d.]* s elapsed, {ETA}",
                            line) for line in lines[:-1]), lines
    assert re.fullmatch(r"\[study t 0/3 trials\] sampling: 40/100 samples \(40%\), ended after \d[\d.]* s", lines[-1])


def test_switched_off_and_dropped_progress_say_nothing(lines_mode, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "60")
    with Progress(5, "quiet", "steps", enabled=False) as off:
        off.update(5)
        time.sleep(0.05)
    dropped = Progress(5, "dropped", "steps")  # never closed: its owner died on an exception
    del dropped
    gc.collect()
    time.sleep(0.05)
    assert capsys.readouterr().err == ""
    assert not progress._LINES._open()


@pytest.mark.parametrize("raw, seconds", [("0.05", 0.05), ("45", 45.0), ("", 30.0), ("abc", 30.0), ("0", 30.0),
                                          ("-5", 30.0), ("nan", 30.0), ("inf", 30.0)])
def test_interval_is_validated(lines_mode, monkeypatch, capsys, raw, seconds):
    monkeypatch.setenv(ENV, raw)
    assert progress.interval_s() == seconds
    assert progress.interval_s() == seconds
    warnings = capsys.readouterr().err.splitlines()
    bad = raw not in ("0.05", "45", "")
    assert len(warnings) == bad and all(f"${ENV}={raw!r} is not a positive number" in w for w in warnings)


def test_fine_tuning_counts_steps(lines_mode, monkeypatch, capsys, digits_model):
    from skipsearch import data
    from skipsearch.methods.diff_tuning.training import finetune
    from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights

    monkeypatch.setenv(ENV, "60")
    images = data.to_model_range(data.load("digits", resolution=16)[:16])
    w = DiffTuningWeights(s=1, s_prime=1, r=0.25, lam=0.1, lr=1e-6, steps=4)
    model = copy.deepcopy(digits_model.denoiser)
    assert list(finetune(model, images, images, w, batch_size=8, sigma_range=(0.002, 80.0), seed=0, report_at=(2,),
                         progress=True)) == [2, 4]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(rf"fine-tuning: 1/4 steps \(25%\), \d[\d.]* s elapsed, {ETA}", lines[0])
    assert re.fullmatch(r"fine-tuning: 4/4 steps \(100%\), done in \d[\d.]* s", lines[1])


def test_durations_read_well():
    assert [progress.duration(s) for s in (0.04, 12.34, 65, 3599.4, 7380)] == [
        "0.0 s", "12.3 s", "1 min 05 s", "59 min 59 s", "2 h 03 min"]
