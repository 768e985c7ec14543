"""Shared trajectories: trials whose first sampler steps are the baseline's start from its cached states.

Why: a Skip-Tuning ``time_window`` trial keeps rho = 1 (a multiplication by exactly 1.0) wherever the noise
level is outside its window, so until its window opens its network calls, and the states they lead to, are
the baseline's, bit for bit. Recomputing them is pure waste when the window opens late in the trajectory.

The states before each step of each chunk of seeds are kept on the host, in a cache with a byte limit, keyed by
the chunk (seeds, labels), the sampler and the shape, per network object. Whoever computes a chunk's shared steps
(the baseline, or a trial before its window) fills them in; later trials resume from the latest state that is
still shared. A trial counts the network evaluations it skipped. A full cache keeps what it has: every trial
samples the same chunks in the same order, so evicting the oldest would make a scan of more chunks than fit miss
every time, while keeping the first ones helps every trial (and every rung) on those. The held-out confirmation
samples other seeds, so it starts with an empty cache (``clear_all``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

ChunkKey = tuple[Hashable, ...]


class TrajectoryCache:
    """States (on the host) before each sampler step, per chunk; a state that would take it past its byte limit is
    not kept."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self._chunks: dict[ChunkKey, dict[int, torch.Tensor]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def latest(self, key: ChunkKey, upto: int) -> tuple[int, torch.Tensor] | None:
        """The cached state with the largest step <= ``upto``, if any."""
        with self._lock:
            states = self._chunks.get(key)
            if not states:
                return None
            steps = [k for k in states if k <= upto]
            return (max(steps), states[max(steps)]) if steps else None

    def put(self, key: ChunkKey, step: int, state: torch.Tensor) -> None:
        """Keep a copy of ``state`` (moved to the host) as the state before ``step``."""
        size = state.numel() * state.element_size()
        with self._lock:
            if self._bytes + size > self.limit_bytes or step in self._chunks.get(key, {}):
                return
        host = state.detach().to("cpu", copy=True)
        with self._lock:
            states = self._chunks.setdefault(key, {})
            if step in states or self._bytes + size > self.limit_bytes:
                return
            states[step] = host
            self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._bytes = 0


_CACHES: weakref.WeakKeyDictionary[Any, TrajectoryCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_for(network: Any, limit_mb: int) -> TrajectoryCache:
    """This process's cache for one network object (it lives as long as the network does); its limit is the
    latest asked for."""
    with _CACHES_LOCK:
        cache = _CACHES.get(network)
        if cache is None:
            cache = _CACHES[network] = TrajectoryCache(limit_mb * 2**20)
        cache.limit_bytes = limit_mb * 2**20
        return cache


def clear_all() -> None:
    """Empty every network's cache in this process (the search's seeds are done with)."""
    with _CACHES_LOCK:
        caches = list(_CACHES.values())
    for cache in caches:
        cache.clear()


@dataclass
class Sharing:
    """One trial's use of the cache: its first ``steps`` sampler steps call the network exactly as the baseline
    does (so the state before step ``steps`` is the baseline's). ``saved`` counts the network evaluations it
    skipped: samples times evaluations per sample, as NFE counts them."""

    steps: int
    cache: TrajectoryCache
    saved: int = field(default=0)
