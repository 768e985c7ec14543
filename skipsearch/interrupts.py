"""SIGTERM stops a run the way Ctrl-C does.

Python turns SIGINT into ``KeyboardInterrupt``, which skipsearch's drivers handle: the trial in flight is recorded
as not evaluated, claims are dropped, and a rerun continues. SIGTERM (what ``kill``, Slurm at its time limit and
container runtimes send) would instead end the process at once, leaving the trial RUNNING until the next run marks
it FAIL. ``sigterm_as_interrupt`` makes SIGTERM raise ``Terminated`` (a ``KeyboardInterrupt``) on the main
thread instead.

A library must not take over a process's signals behind its user's back, so the handler is installed only on the
main thread (the only one Python delivers signals to), only when SIGTERM still has its default action (a handler
the user installed is theirs and is kept), and only for the duration of the call: the CLI holds it for the whole
command, ``skipsearch.run`` for the run. It raises once: a second SIGTERM while the first one's bookkeeping runs is
ignored (SIGKILL still ends the process), so the recording of the trial in flight is not cut short.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from skipsearch.errors import Terminated

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: the status a shell reports for a process SIGTERM ended
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130


@contextmanager
def sigterm_as_interrupt() -> Iterator[bool]:
    """While inside, SIGTERM raises ``Terminated`` on the main thread; yields whether the handler was installed
    (False off the main thread, or when SIGTERM already has a handler other than the default)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield False
        return
    raised = False

    def terminate(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:  # later SIGTERMs arrive while the first one is being handled: let that finish
            raised = True
            raise Terminated(f"terminated by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_code(err: KeyboardInterrupt) -> int:
    """143 after SIGTERM, 130 after Ctrl-C: the codes a shell reports for a process that signal ended."""
    return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
