"""Where a study's files for optuna-dashboard live: an Optuna artifact store next to the database.

For SQLite ``DIR/NAME.db`` the store is ``DIR/NAME-artifacts/``. PostgreSQL has no file to sit beside, so
its store is a folder per database (host, port, name) in skipsearch's cache (``$SKIPSEARCH_CACHE``, else
``~/.cache/skipsearch``), never the working directory. ``$SKIPSEARCH_ARTIFACTS`` overrides both: on several
machines, point it at a shared folder, so that every driver's files reach the dashboard.
"""

from __future__ import annotations

import os
import re
import tempfile
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
    """Optuna's file-system artifact store in ``artifact_dir``; ``create=False`` for readers (None if absent).

    A driver (``create=True``) gets a store it has just written to: the folder is created and a probe file is
    written and removed in it, so an unusable folder is refused before a study is stored rather than after its
    first trial ran. Permission bits alone cannot tell (root ignores them; a read-only mount or a full disk does
    not show in them)."""
    from optuna.artifacts import FileSystemArtifactStore

    folder = artifact_dir(url)
    if not folder.is_dir() and not create:
        return None
    if create:
        check_writable(folder)
    return FileSystemArtifactStore(str(folder))


def check_writable(folder: Path) -> None:
    """Create ``folder`` if need be and write a file in it, or raise one UserError that says how to fix it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".skipsearch-probe-") as probe:
            probe.write(b"skipsearch")
            probe.flush()
    except OSError as err:
        reason = "a file on its path is not a folder" if isinstance(err, FileExistsError) else err.strerror or err
        raise UserError(f"the artifact folder {folder} cannot be written ({reason}); set ${ARTIFACTS_ENV} to a "
                        f"writable folder (it holds the sample grids and plots optuna-dashboard shows)") from None
