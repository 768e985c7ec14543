"""skipsearch's disk cache (reference features, knowledge banks, converted weights): where it is, and how an
entry is read (never unpickled) and written (atomically)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from skipsearch.files import atomic_write


def cached_array(path: Path, key: str) -> torch.Tensor | None:
    """An array from skipsearch's cache, or None when it is absent or unreadable (then it is recomputed).
    Never unpickled: ``np.load`` refuses object arrays."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return torch.from_numpy(archive[key])
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_cached_array(path: Path, key: str, array: torch.Tensor) -> None:
    """Atomically, under a per-process temporary name (Ray workers may build the same entry at once)."""
    atomic_write(path, lambda f: np.savez(f, **{key: array.numpy()}))




def cached_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """Several arrays of one cache entry; None unless every key is there and readable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: torch.from_numpy(archive[key]) for key in keys}
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_cached_arrays(path: Path, arrays: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda f: np.savez(f, **{key: a.cpu().numpy() for key, a in arrays.items()}))
