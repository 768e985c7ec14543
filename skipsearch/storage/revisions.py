"""Which schema revision a database is at, and bringing a writer's database to the newest (``migrations``).

A writer upgrades in place, in one transaction that holds the database's write lock (SQLite: ``BEGIN
IMMEDIATE`` on a connection whose DDL is really part of the transaction; PostgreSQL: an advisory lock): a
failure part way leaves the database as it was, and of two processes opening the same old database at once,
the second waits and finds it upgraded. A database from before the revisions (``skipsearch_schema`` only) is
first stamped at the newest revision its tables and columns show. A reader never writes: it reads a database
at revision ``READABLE`` or later, and is told to run ``skipsearch upgrade`` once on an older one.

Readers and an up-to-date writer only read the version table, without importing Alembic (its import is a
tenth of a second of every ``skipsearch studies``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine

from skipsearch.errors import StorageError
from skipsearch.storage import urls
from skipsearch.storage.migrations import FOLDER, HEAD, LEGACY, READABLE, REVISIONS, VERSION_TABLE

LEGACY_TABLE = "skipsearch_schema"
PG_LOCK = zlib.crc32(b"skipsearch schema upgrade")  # the advisory lock every skipsearch upgrade takes


@dataclass(frozen=True, kw_only=True)
class Found:
    """What a database says about its schema."""

    revision: str | None  # the version table's; None: no version table (a new or a pre-revision database)
    legacy: int | None  # ``skipsearch_schema.version``; None: no such table (or no row)

    @property
    def empty(self) -> bool:
        """No skipsearch schema at all (maybe Optuna's tables): a new database for skipsearch."""
        return self.revision is None and self.legacy is None

    def shown(self) -> str:
        return self.revision if self.revision is not None else f"{self.legacy} (before revisions)"


@dataclass(frozen=True, kw_only=True)
class Upgrade:
    """What a writer did to its database's schema: the revision it found (None: none, a new database), the one
    it stamped a pre-revision database at, and the revision it left."""

    found: str | None
    stamped: str | None
    to: str

    def path(self) -> list[str]:
        """The revisions run, in order."""
        start = self.stamped or self.found
        return list(REVISIONS[REVISIONS.index(start) + 1:] if start else REVISIONS)


def find(conn: Connection) -> Found:
    names = set(inspect(conn).get_table_names())
    revision = legacy = None
    if VERSION_TABLE in names:
        revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    if LEGACY_TABLE in names:
        legacy = conn.execute(text(f"SELECT version FROM {LEGACY_TABLE}")).scalar()
    return Found(revision=revision, legacy=legacy)


def refuse_unknown(found: Found, shown_url: str) -> None:
    """A database written by a newer skipsearch: its tables may hold what this code would drop or misread."""
    newer = (found.revision not in REVISIONS if found.revision is not None
             else found.legacy is not None and found.legacy not in LEGACY)
    if newer:
        raise StorageError(f"{shown_url} was written by a newer skipsearch (schema revision {found.shown()}, this "
                           f"one knows up to {HEAD}); upgrade skipsearch")


def readable(found: Found) -> bool:
    """Whether a reader reads the database as it is: at ``READABLE`` or later (before revisions: schema 3)."""
    if found.revision is not None:
        return REVISIONS.index(found.revision) >= REVISIONS.index(READABLE)
    return found.legacy is not None and REVISIONS.index(LEGACY.get(found.legacy, REVISIONS[0])) >= \
        REVISIONS.index(READABLE)


def check_current(found: Found, shown_url: str) -> None:
    """A reader's check: the database holds every column a reader names (``READABLE``), or one message says
    what to do. A reader never upgrades: a later revision's tables are read where they exist."""
    if found.empty:
        raise StorageError(f"{shown_url} holds no skipsearch study (no {LEGACY_TABLE} table)")
    refuse_unknown(found, shown_url)
    if not readable(found):  # its tables lack what every query names
        raise StorageError(f"{shown_url} was made by an older skipsearch (schema revision {found.shown()}, now "
                           f"{HEAD}); upgrade it once with `skipsearch upgrade --storage {shown_url}` (it keeps "
                           f"every number; a skipsearch older than this one cannot open it afterwards)")


def upgrade(engine: Engine, url: str, shown_url: str) -> Upgrade | None:
    """Bring a writer's database to ``HEAD``; None when it already was (the usual open: one read, no lock)."""
    with engine.connect() as conn:
        found = find(conn)
    refuse_unknown(found, shown_url)
    if found.revision == HEAD:
        return None
    with _write_locked(engine, url) as conn:
        found = find(conn)  # again, under the lock: another process may have upgraded it meanwhile
        refuse_unknown(found, shown_url)
        if found.revision == HEAD:
            return None
        stamped = None if found.revision is not None or found.empty else _stamp_for(conn, found.legacy)
        run(conn, HEAD, stamp=stamped)
        return Upgrade(found=found.revision, stamped=stamped, to=HEAD)


def run(conn: Connection, target: str, stamp: str | None = None) -> None:
    """Alembic's upgrade to ``target`` on ``conn``, inside the transaction the caller holds (after stamping a
    pre-revision database at ``stamp``)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(FOLDER))
    config.attributes["connection"] = conn
    if stamp is not None:
        command.stamp(config, stamp)
    command.upgrade(config, target)


def _stamp_for(conn: Connection, legacy: int | None) -> str | None:
    """The newest revision a pre-revision database stands for: the one its version number says, or an earlier
    one where the tables and columns of a revision are not all there (an upgrade by the old counter that
    stopped part way; a table that came without a new number). None: not even the first's."""
    from alembic.script import ScriptDirectory

    from skipsearch.storage.migrations.shape import present

    script = ScriptDirectory(str(FOLDER))
    ceiling = REVISIONS.index(LEGACY[legacy]) if legacy in LEGACY else -1
    stamp = None
    for revision in REVISIONS[:ceiling + 1]:
        module = script.get_revision(revision).module
        if not present(conn, module.tables(), module.columns()):
            break
        stamp = revision
    return stamp


@contextmanager
def _write_locked(engine: Engine, url: str) -> Iterator[Connection]:
    """One transaction holding the database's write lock, committed when the block ends well."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK})
            yield conn
        return
    # pysqlite commits DDL on its own unless it is told to leave transactions to us: autocommit mode, then an
    # explicit BEGIN IMMEDIATE (the write lock, taken up front; a second process waits for it)
    own = create_engine(url, **urls.engine_kwargs(url))

    @event.listens_for(own, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        urls.sqlite_pragmas(dbapi_conn)

    @event.listens_for(own, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with own.begin() as conn:
            yield conn
    finally:
        own.dispose()
