"""A tiny accumulating stopwatch, so evaluate() can say where a trial's time went."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def measure(self, key: str, device: torch.device | None = None) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds[key] += time.perf_counter() - start

    def timed(self, fn, key: str, device: torch.device | None = None):
        """Wrap a callable so every call is added to ``key``."""

        def wrapper(*args, **kwargs):
            with self.measure(key, device):
                return fn(*args, **kwargs)

        return wrapper
