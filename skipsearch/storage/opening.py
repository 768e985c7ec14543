"""Opening a database: is the file intact, is its schema one this code writes or reads, and the one message for a
SQLite file that is damaged or no database at all.

A damaged file is refused when it is opened (``PRAGMA quick_check``), rather than with a traceback from whichever
query, ours or Optuna's, first reads a damaged page. A writer brings the schema to this code's revision
(``revisions.upgrade``), a reader only checks it (``revisions.check_current``).
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from skipsearch.errors import StorageError
from skipsearch.storage import revisions, urls

SCHEMA_ATTEMPTS = 8  # a lock wait that ran out, a race on a new PostgreSQL database: retried
DAMAGED_HINT = ("restore it from a backup, or save what is left with `sqlite3 FILE .recover | sqlite3 NEW.db`, or "
                "give another --storage")


def watch_sqlite(engine: Engine) -> None:
    """A writer's SQLite connections: WAL and a busy timeout (``urls.sqlite_pragmas``), set at every connect."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        urls.sqlite_pragmas(dbapi_conn)


def damage(err: BaseException) -> str | None:
    """SQLite's own word that a file is damaged or no database at all (``database disk image is malformed``,
    ``file is not a database``): a plain sqlite3.DatabaseError, not one of its subclasses (a lock, a constraint)."""
    orig = getattr(err, "orig", None)
    if type(orig) is sqlite3.DatabaseError:
        return (str(orig).splitlines() or ["damaged"])[0]
    return None


def damaged_line(err: BaseException, sqlite_file: Path | None) -> str | None:
    """The one message for a SQLite file that is damaged or no database at all, naming the file."""
    why = damage(err)
    if why is None or sqlite_file is None:
        return None
    return f"the SQLite file {sqlite_file} is damaged or not a database ({why}); {DAMAGED_HINT}"


def check_intact(engine: Engine, path: Path | None) -> None:
    """SQLite only: a pass over every page; a fault is one StorageError naming the file."""
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return  # not SQLite, or a database still to be made
    with engine.connect() as conn:
        problems = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        lines = [line for p in problems for line in p.splitlines() if line and not line.startswith("*** in ")]
        raise StorageError(f"the SQLite file {path} is damaged ({(lines or problems)[0][:160]}); {DAMAGED_HINT}")


def create_schema(engine: Engine, url: str, shown_url: str) -> revisions.Upgrade | None:
    """A writer's schema at this code's revision: a new database made at it, an older one upgraded in place in one
    transaction; what was done, or None when it already was."""
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return revisions.upgrade(engine, url, shown_url)
        except SQLAlchemyError:
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.3))
    raise AssertionError("unreachable")


def check_schema(engine: Engine, shown_url: str) -> None:
    """A reader's check: a database it can read as it is (``revisions.check_current``)."""
    with engine.connect() as conn:
        found = revisions.find(conn)
    revisions.check_current(found, shown_url)

