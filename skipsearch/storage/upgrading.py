"""``skipsearch upgrade``: an existing database brought to this code's schema revision, on its own.

A reader never upgrades (``revisions``): it names this command. A writer (``skipsearch run``) upgrades on opening
anyway; this is for a database whose studies are finished, read by ``best``, ``export`` and ``report``.
"""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from skipsearch.errors import StorageError
from skipsearch.storage import revisions, urls
from skipsearch.storage.store import Store


def upgrade_database(url: str) -> revisions.Upgrade | None:
    """``skipsearch upgrade``: bring an existing skipsearch database to this code's revision (``Store`` opened as a
    writer, which upgrades in one transaction), never making one: a URL with no skipsearch database is refused."""
    parsed = urls.parse(url)
    path = urls.sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.is_file():
        raise StorageError(f"no database at {path} ({urls.shown(parsed)})")
    engine = create_engine(url, **urls.engine_kwargs(url))
    try:
        with engine.connect() as conn:
            found = revisions.find(conn)
    except SQLAlchemyError as err:
        raise StorageError(f"cannot open the database {urls.shown(parsed)}: {urls.error_line(err, url)}") from None
    finally:
        engine.dispose()
    if found.empty:
        raise StorageError(f"{urls.shown(parsed)} holds no skipsearch study: nothing to upgrade")
    store = Store(url)
    try:
        return store.schema_upgrade
    finally:
        store.close()
