"""A trial's time limit (``search.trial_timeout_s``), checked cooperatively.

The trial runner sets a deadline around one trial; the science code calls ``check()`` at its natural
steps (every network evaluation, every feature batch, every fine-tuning step). A trial past its deadline
raises ``TrialTimeout`` at the next check and is recorded as FAIL with reason "timeout". The deadline
lives in a context variable, so each thread (a Ray worker runs trials in a thread) has its own, and code
outside a trial (confirmation, ``verify``, a user's own sampling) never times out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from skipsearch.errors import TrialTimeout

_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("skipsearch_trial_deadline", default=None)


@contextmanager
def limit(seconds: float | None) -> Iterator[None]:
    """Everything inside the block must finish within ``seconds`` (None: no limit)."""
    token = _DEADLINE.set(None if seconds is None else (time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check() -> None:
    """Raise TrialTimeout if the current trial is past its deadline."""
    current = _DEADLINE.get()
    if current is not None and time.monotonic() > current[0]:
        raise TrialTimeout(f"timeout: the trial ran longer than search.trial_timeout_s = {current[1]:g} s")
