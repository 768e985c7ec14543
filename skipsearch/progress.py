"""Progress of long work: sampling, feature extraction, fine-tuning, a study's trials, held-out evaluations.

On a terminal (stderr is a tty) a ``Progress`` is a tqdm bar that counts in the work's own unit (samples,
steps, trials, evaluations). Anywhere else (nohup, Slurm, CI, a redirected log) it writes plain lines to
stderr, flushed as they are written, such as::

    sampling: 4,096/10,000 samples (40%), 12.3 s elapsed, ETA 18.0 s

Outermost work says a line after its first update, then the process says one at least every
``$SKIPSEARCH_PROGRESS_S`` seconds (30 by default) while any work is under way, between updates too (a
held-out evaluation or a big batch can take minutes), and a last line when the work that spoke ends. Work
nested in other work (a trial's sampling inside the study) speaks only on that schedule, its line prefixed
with the work around it (``[study demo 3/30 trials] sampling: ...``), so a log gets about one line per
interval however deep the nesting. ``enabled=False`` is silent in both modes.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import weakref
from types import TracebackType

from tqdm.auto import tqdm

ENV = "SKIPSEARCH_PROGRESS_S"
DEFAULT_S = 30.0
LONGEST_WAIT_S = 3600.0  # the line thread wakes at least this often (a huge interval is still a valid one)
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

_warned: set[str] = set()


def interval_s() -> float:
    """Seconds between progress lines: ``$SKIPSEARCH_PROGRESS_S``, else 30. A value that is not a positive,
    finite number of seconds is reported once (a warning line on stderr) and the default is used instead."""
    raw = os.environ.get(ENV, "")
    if not raw.strip():
        return DEFAULT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    if raw not in _warned:
        _warned.add(raw)
        _write(f"warning: ${ENV}={raw!r} is not a positive number of seconds; "
               f"progress lines every {DEFAULT_S:g} s instead")
    return DEFAULT_S


def on_terminal() -> bool:
    """Whether stderr is a terminal (bars), rather than a file, a pipe or nothing (lines)."""
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _write(text: str) -> None:
    """One line on stderr, flushed, after whatever stdout holds (``tqdm.write`` lines: both may share a log
    file) and never in the middle of a ``tqdm.write`` (its lock). A stream that is gone only loses the line."""
    with tqdm.get_lock():
        try:
            if sys.stdout is not None:
                sys.stdout.flush()
            if sys.stderr is not None:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
        except (OSError, ValueError):
            pass
        _LINES.last = time.monotonic()


class _Lines:
    """The process's line-mode work, outermost first; when the last line went out; and the thread that says a
    line for the innermost work whenever nothing was said for an interval. Work is held by weak reference:
    work dropped without ``close()`` (an exception before its owner's ``finally``) stops being reported."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refs: list[weakref.ref[Progress]] = []
        self.last = 0.0
        self.stop: threading.Event | None = None

    def join(self, work: Progress) -> bool:
        """Track ``work``; True when it is the outermost (no other work under way)."""
        every = interval_s()  # outside the lock: a warning line takes tqdm's lock, which ``say`` takes first
        with self.lock:
            outermost = not self._open()
            self.refs.append(weakref.ref(work))
            if self.stop is None:
                self.last, self.stop = time.monotonic(), threading.Event()
                threading.Thread(target=self._tick, args=(self.stop, every), name="skipsearch-progress",
                                 daemon=True).start()
        return outermost

    def leave(self, work: Progress) -> None:
        with self.lock:
            self.refs = [r for r in self.refs if r() is not work]
            self._stop_if_idle()

    def around(self, work: Progress) -> list[Progress]:
        """The work that ``work`` is nested in, outermost first."""
        with self.lock:
            open_ = self._open()
        for i, w in enumerate(open_):
            if w is work:
                return open_[:i]
        return []

    def _open(self) -> list[Progress]:
        """The live work (under ``lock``)."""
        self.refs = [r for r in self.refs if r() is not None]
        return [w for w in (r() for r in self.refs) if w is not None]

    def _stop_if_idle(self) -> None:
        if not self._open() and self.stop is not None:
            self.stop.set()
            self.stop = None

    def _next(self, stop: threading.Event, every: float) -> tuple[Progress | None, float]:
        """The innermost work and the seconds until its line is due; None when this thread's session ended."""
        with self.lock:
            open_ = self._open()
            if stop is not self.stop or not open_:
                self._stop_if_idle()
                return None, 0.0
            return open_[-1], self.last + every - time.monotonic()

    def _tick(self, stop: threading.Event, every: float) -> None:
        while not stop.is_set():
            inner, wait = self._next(stop, every)
            if inner is None:
                return
            if wait > 0:
                inner = None  # no strong reference while waiting: work dropped meanwhile can go
                stop.wait(min(wait, LONGEST_WAIT_S))
            else:
                inner.say()


_LINES = _Lines()


class Progress:
    """Progress of ``total`` units of work (``unit`` is the plural: "samples", "steps", "trials").

    ``update(k)`` adds k units done; ``close()`` (or leaving the ``with`` block) ends it. ``leave=False``
    erases the terminal bar when it ends (inner work); ``initial`` units were done before (they are not
    counted in the rate, nor in the ETA). ``enabled=False``: silent.
    """

    def __init__(self, total: int, desc: str, unit: str, *, enabled: bool = True, leave: bool = True,
                 initial: int = 0):
        self.total, self.desc, self.unit = max(0, int(total)), desc, unit
        self.n = self.initial = int(initial)
        self.start = time.monotonic()
        self.said = self.closed = self.outermost = False
        self.bar: tqdm | None = None
        self.lines = enabled and not on_terminal()
        if enabled and not self.lines:
            self.bar = tqdm(total=self.total, initial=self.initial, desc=desc, unit=unit, leave=leave,
                            file=sys.stderr, bar_format=BAR, dynamic_ncols=True)
        elif self.lines:
            self.outermost = _LINES.join(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def update(self, k: int = 1) -> None:
        if k <= 0 or self.closed:
            return
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.lines and self.outermost and not self.said:
            self.say()

    def advance_to(self, n: int) -> None:
        """Set the count to ``n`` units done when that is more than counted so far: work that others share (a
        study's trials, which other drivers run too) is counted where it is recorded, not by who did it."""
        self.update(int(n) - self.n)

    def close(self) -> None:
        """End the work; in line mode its last line, if it said anything before (finished or not)."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.lines:
            text = self.line(final=True)
            _LINES.leave(self)
            with tqdm.get_lock():  # a line the thread is saying for this work is out (and counted) first
                if self.said:
                    _write(text)

    def say(self) -> None:
        """A line for this work as it stands (none once it has ended)."""
        with tqdm.get_lock():
            if self.closed:
                return
            _write(self.line())
            self.said = True

    def line(self, final: bool = False) -> str:
        """``[outer work] desc: n/total unit (pct%), elapsed, ETA``; at the end, how it ended."""
        elapsed = time.monotonic() - self.start
        count = f"{self.n:,}/{self.total:,} {self.unit}"
        if self.total:
            count += f" ({100 * min(self.n, self.total) // self.total}%)"
        if final:
            how = f"done in {duration(elapsed)}" if self.n >= self.total else f"ended after {duration(elapsed)}"
            text = f"{self.desc}: {count}, {how}"
        else:
            rate_done = self.n - self.initial
            eta = duration(max(0, self.total - self.n) * elapsed / rate_done) if rate_done > 0 else "unknown"
            text = f"{self.desc}: {count}, {duration(elapsed)} elapsed, ETA {eta}"
        outer = "".join(f"[{w.desc} {w.n:,}/{w.total:,} {w.unit}] " for w in _LINES.around(self))
        return outer + text
