"""Private temporary folders (a driver's profile plots, Ray Tune's working folder) that a killed process does
not leave behind for good.

A process removes its own folder when it finishes, but one killed with SIGKILL (or by the OOM killer) cannot.
So each folder's name carries its process id, ``PREFIX<pid>-XXXXXXXX``, and every new folder of a prefix first
removes the earlier ones whose process is gone. A process id alone is not proof: in another PID namespace that
shares ``/tmp`` (a container) a live process is invisible here. So a folder is also left alone while anything in
it changed within the last ``STALE_S`` seconds; a live search writes into its folder at every trial.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

STALE_S = 3600.0  # a dead process's folder untouched this long is litter


def scratch_folder(prefix: str) -> Path:
    """A new private folder ``<tmp>/PREFIX<pid>-XXXXXXXX``, after sweeping this prefix's litter."""
    sweep(prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def sweep(prefix: str, now: float | None = None) -> list[Path]:
    """Remove ``PREFIX<pid>-*`` folders whose process is gone and which were untouched for ``STALE_S``; the
    removed ones. Folders of another naming (no process id) and ones that cannot be read are left alone."""
    now = time.time() if now is None else now
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = owner(folder.name, prefix)
        if pid is None or pid == os.getpid() or alive(pid) or not folder.is_dir() or folder.is_symlink():
            continue
        last = newest_change(folder)
        if last is not None and now - last > STALE_S:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def owner(name: str, prefix: str) -> int | None:
    """The process id in a folder name ``PREFIX<pid>-XXXXXXXX``, or None for any other name."""
    head, sep, _ = name.removeprefix(prefix).partition("-")
    return int(head) if sep and head.isdigit() and name.startswith(prefix) else None


def alive(pid: int) -> bool:
    """Whether a process of this id exists here (one of another user's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def newest_change(folder: Path) -> float | None:
    """The latest modification time of the folder or anything in it; None when it cannot be read."""
    try:
        latest = folder.stat().st_mtime
        for root, dirs, files in os.walk(folder):
            for name in (*dirs, *files):
                latest = max(latest, os.lstat(os.path.join(root, name)).st_mtime)
        return latest
    except OSError:
        return None
