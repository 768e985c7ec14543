"""The one atomic write and the one file hash that every file skipsearch writes or checks goes through.

A file is written whole or not at all: it is written under a temporary name beside its target (unique per
process, since Ray workers may build the same cache entry at once) and renamed into place, which is atomic
on POSIX file systems. A reader therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

HASH_PREFIX = 16  # hex digits of sha256 stored beside results (model weights, fine-tuned weights)


def cache_dir() -> Path:
    """skipsearch's cache folder (reference statistics, knowledge banks, PostgreSQL studies' artifacts):
    ``$SKIPSEARCH_CACHE``, else ``~/.cache/skipsearch``; created on first use."""
    path = Path(os.environ.get("SKIPSEARCH_CACHE", Path.home() / ".cache" / "skipsearch"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file, then rename it to ``path`` (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks and computed once per process for each (path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def file_hash(path: str | Path) -> str:
    """The short form stored with results: the first 16 hex digits of the file's SHA-256."""
    return file_sha256(path)[:HASH_PREFIX]
