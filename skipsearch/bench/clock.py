"""Timing on a device: wall seconds with the device's queued work included, and the host-device syncs a call
makes (a GPU call returns before its kernels run, so an honest time drains the device before and after)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from skipsearch.timing import drained_seconds as seconds  # noqa: F401 - the benchmarks' name for it


def device_syncs(call: Callable[[], object]) -> int:
    """How many times ``call`` makes the host wait for the GPU (torch's sync debug mode); 0 off CUDA."""
    if not torch.cuda.is_available():
        return 0
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)
