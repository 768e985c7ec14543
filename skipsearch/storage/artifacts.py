"""Where a study's files for optuna-dashboard live: an Optuna artifact store next to the database.

For SQLite ``DIR/NAME.db`` the store is ``DIR/NAME-artifacts/``. PostgreSQL has no file to sit beside, so
its store is a folder per database (host, port, name) in skipsearch's cache (``$SKIPSEARCH_CACHE``, else
``~/.cache/skipsearch``), never the working directory. ``$SKIPSEARCH_ARTIFACTS`` overrides both: on several
machines, point it at a shared folder, so that every driver's files reach the dashboard.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from skipsearch.errors import UserError
from skipsearch.files import cache_dir
from skipsearch.storage import urls

ARTIFACTS_ENV = "SKIPSEARCH_ARTIFACTS"


def artifact_dir(url: str) -> Path:
    """The folder of the study database's artifacts (not created here)."""
    override = os.environ.get(ARTIFACTS_ENV)
    if override:
        return Path(override).expanduser()
    parsed = urls.parse(url)
    if parsed.get_backend_name() == "sqlite":
        db = urls.sqlite_path(parsed)
        return db.with_name(f"{db.stem}-artifacts")
    name = f"{parsed.host or 'local'}_{parsed.port or 'default'}_{parsed.database or 'default'}"
    return cache_dir() / "artifacts" / re.sub(r"[^A-Za-z0-9._-]", "_", name)


def artifact_store(url: str, create: bool = True):
    """Optuna's file-system artifact store in ``artifact_dir``; ``create=False`` for readers (None if absent)."""
    from optuna.artifacts import FileSystemArtifactStore

    folder = artifact_dir(url)
    if not folder.is_dir():
        if not create:
            return None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the artifact folder {folder} ({err.strerror}); set "
                            f"${ARTIFACTS_ENV} to a writable folder") from None
    return FileSystemArtifactStore(str(folder))
