"""Alembic's entry point for skipsearch's revisions.

skipsearch runs them itself (``storage.revisions.upgrade``) on a connection it has already opened a
transaction on, handed over in ``config.attributes["connection"]``: the whole upgrade, stamp included, is that
one transaction, committed or rolled back by the caller. For writing a new revision by hand, ``alembic`` may
also be pointed at a database with ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from skipsearch.storage.migrations import VERSION_TABLE


def _run(connection) -> None:
    context.configure(connection=connection, version_table=VERSION_TABLE, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()
