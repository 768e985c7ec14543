"""A tiny accumulating stopwatch, so evaluate() can say where a trial's time went.

On a GPU a call returns before its kernels have run, and waiting for them after every network call would
stall the host between calls (the very overlap that keeps a small model's GPU busy). So a CUDA measurement
records a pair of CUDA events on the current stream and is read once, when ``seconds`` is asked for: the
device time from the start of the first kernel queued inside the block to the end of the last.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


class Stopwatch:
    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, Any, Any]] = []  # (key, start, end) CUDA events not yet read

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per key; reads (and waits for) the CUDA events recorded so far."""
        if self._events:
            self._events[-1][2].synchronize()
            for key, start, end in self._events:
                self._seconds[key] += start.elapsed_time(end) / 1e3
            self._events.clear()
        return self._seconds

    @contextmanager
    def measure(self, key: str, device: torch.device | None = None) -> Iterator[None]:
        if device is not None and device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((key, start, end))
            return
        begun = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[key] += time.perf_counter() - begun

    def timed(self, fn: Callable, key: str, device: torch.device | None = None) -> Callable:
        """Wrap a callable so every call is added to ``key``."""

        def wrapper(*args, **kwargs):
            with self.measure(key, device):
                return fn(*args, **kwargs)

        return wrapper


def drained_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()`` with the device drained before and after (a GPU call returns before its kernels
    run): for timing whole calls side by side, where a ``Stopwatch`` would time the kernels alone."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
