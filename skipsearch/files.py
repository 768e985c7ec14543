"""The one atomic write and the one file hash that every file skipsearch writes or checks goes through.

A file is written whole or not at all: it is written under a temporary name beside its target (unique per
process, since Ray workers may build the same cache entry at once) and renamed into place, which is atomic
on POSIX file systems. A reader therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from skipsearch.errors import FileWriteError

HASH_PREFIX = 16  # hex digits of sha256 stored beside results (model weights, fine-tuned weights)


def cache_dir() -> Path:
    """skipsearch's cache folder (reference statistics, knowledge banks, PostgreSQL studies' artifacts):
    ``$SKIPSEARCH_CACHE``, else ``~/.cache/skipsearch``; created on first use."""
    path = Path(os.environ.get("SKIPSEARCH_CACHE", Path.home() / ".cache" / "skipsearch"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# What the machine, not skipsearch's code, decides: a full disk or quota, a read-only or unwritable folder, a file
# grown past the process's size limit, a path through a regular file, a failing device.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                            errno.ENOTDIR, errno.EIO})


def machine_failure(err: BaseException) -> str | None:
    """One line for an ``OSError`` that the machine caused (``MACHINE_ERRNOS``: the user can fix it, and a
    traceback would not help), naming the file; None for anything else (a bug keeps its traceback)."""
    if isinstance(err, FileWriteError):
        return str(err)
    if not isinstance(err, OSError) or err.errno not in MACHINE_ERRNOS:
        return None
    where = f" ({err.filename})" if err.filename else ""
    return f"the machine refused a write: {err.strerror or err}{where}; {fix_hint(err.errno)}"


def fix_hint(code: int | None) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some space (or raise the limit), then run the same command again to continue"
    return "make the folder writable (or point skipsearch elsewhere), then run the same command again to continue"


def write_error(path: Path, err: OSError) -> FileWriteError:
    """A failed write of ``path`` as one message: what failed, why, and what to do."""
    return FileWriteError(f"cannot write {path}: {err.strerror or err}; {fix_hint(err.errno)}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file, then rename it to ``path`` (its folder is created). A write the
    machine refuses (a full disk, an unwritable folder) raises ``FileWriteError`` naming the file, with nothing
    left behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # the folder itself may be what failed
            tmp.unlink(missing_ok=True)
        if isinstance(err, FileExistsError):  # mkdir: a folder on the way is a regular file
            raise FileWriteError(f"cannot write {path}: {err.filename} is not a folder; "
                                 f"{fix_hint(err.errno)}") from err
        if isinstance(err, OSError) and not isinstance(err, FileWriteError) and err.errno in MACHINE_ERRNOS:
            raise write_error(path, err) from err
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
