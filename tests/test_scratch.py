"""Temporary folders of killed processes are swept by the next one, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pytest

from skipsearch import scratch

PREFIX = "skipsearch-plots-"


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder(root, pid, tag: str, age_s: float, inner_age_s: float | None = None):
    """A scratch folder with one file, its times set ``age_s`` back (the file's ``inner_age_s``)."""
    folder = root / f"{PREFIX}{pid}-{tag}"
    (folder / "trial-000001").mkdir(parents=True)
    inner = folder / "trial-000001" / "profile.png"
    inner.write_bytes(b"png")
    now = time.time()
    for path, age in ((inner, inner_age_s if inner_age_s is not None else age_s),
                      (folder / "trial-000001", age_s), (folder, age_s)):
        os.utime(path, (now - age, now - age))
    return folder


def test_a_dead_processs_stale_folder_is_swept_and_nothing_else(tmp_root):
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = _folder(tmp_root, dead, "stale", 2 * scratch.STALE_S)
        recent = _folder(tmp_root, dead, "recent", 2 * scratch.STALE_S, inner_age_s=60)  # written a minute ago
        live = _folder(tmp_root, sleeper.pid, "live", 2 * scratch.STALE_S)
        own = _folder(tmp_root, os.getpid(), "own", 2 * scratch.STALE_S)
        older_naming = tmp_root / f"{PREFIX}abcdefgh"
        older_naming.mkdir()
        os.utime(older_naming, (0, 0))
        other_prefix = _folder(tmp_root, dead, "x", 2 * scratch.STALE_S).rename(tmp_root / f"other-{dead}-x")

        made = scratch.scratch_folder(PREFIX)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not stale.exists()
    assert recent.exists() and live.exists() and own.exists() and older_naming.exists() and other_prefix.exists()
    assert made.parent == tmp_root and made.name.startswith(f"{PREFIX}{os.getpid()}-") and made.is_dir()


def test_owner_reads_only_this_prefixs_names():
    assert scratch.owner(f"{PREFIX}123-abc", PREFIX) == 123
    assert scratch.owner(f"{PREFIX}abc", PREFIX) is None
    assert scratch.owner(f"{PREFIX}-abc", PREFIX) is None
    assert scratch.owner("skipsearch-ray-123-abc", PREFIX) is None
