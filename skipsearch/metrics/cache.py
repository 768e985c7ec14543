"""skipsearch's disk cache (reference features, knowledge banks, converted weights): where it is, and how an
entry is read (never unpickled) and written (atomically)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from skipsearch.files import atomic_write, cache_dir

UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")  # anything else in a label (a '/' above all) becomes '_' in a file name


def cache_file(kind: str, label: str, key: str) -> Path:
    """The cache entry ``KIND-LABEL-KEY.npz`` directly in ``cache_dir()``. The label (a model's or an extractor's
    name, which a spec or a caller may set) is for people reading the folder; the key, a hash of everything the
    entry depends on, the label included, is what tells entries apart. So the label's unsafe characters are
    replaced, and the entry can never land outside the cache folder or in a folder of its own."""
    folder = cache_dir().resolve()
    path = folder / f"{kind}-{UNSAFE.sub('_', label)}-{key}.npz"
    if path.parent != folder:  # cannot happen once '/' is replaced: a bug (a traceback) if UNSAFE is ever loosened
        raise RuntimeError(f"cache entry for {label!r} would lie outside the cache folder {folder}")
    return path


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
