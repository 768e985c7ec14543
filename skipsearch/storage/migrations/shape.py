"""What every revision does, written once: create its tables and add its columns, skipping what is there.

A revision states its tables and columns as they were when it was written (never ``storage.tables``, which
moves on), as functions: a ``Column`` belongs to one table, so each upgrade gets fresh ones. What is already
there is skipped because databases of the old version counter were not always whole: the counter's upgrade
added columns one by one, each committed on its own by SQLite, and two tables came without a new number.
``storage.revisions`` stamps an old database at the newest revision whose tables and columns are all there.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

Tables = dict[str, list]  # table name -> its columns and constraints
Columns = dict[str, list[sa.Column]]  # table name -> the columns added to it


def per_trial(*items, key: tuple[str, ...] = ()) -> list:
    """A table of rows about a study's trials, as every revision wrote one: an id, the study and trial number,
    the given columns, a creation time, and one row per (study, trial, *key)."""
    return [sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("study_name", sa.String(256), nullable=False),
            sa.Column("trial_number", sa.Integer, nullable=False),
            *items,
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.UniqueConstraint("study_name", "trial_number", *key)]


def names(tables: Tables, columns: Columns) -> dict[str, set[str]]:
    """Every table a revision makes or changes, with the column names it gives that table."""
    out = {name: {c.name for c in items if isinstance(c, sa.Column)} for name, items in tables.items()}
    for name, cols in columns.items():
        out.setdefault(name, set()).update(c.name for c in cols)
    return out


def present(conn: Connection, tables: Tables, columns: Columns) -> bool:
    """Whether the database already has every table and column a revision makes."""
    inspector = sa.inspect(conn)
    have = set(inspector.get_table_names())
    for name, wanted in names(tables, columns).items():
        if name not in have or not wanted <= {c["name"] for c in inspector.get_columns(name)}:
            return False
    return True


def apply(tables: Tables, columns: Columns) -> set[str]:
    """Create the tables that are missing and add the columns that are missing; the tables created."""
    conn = op.get_bind()
    have = set(sa.inspect(conn).get_table_names())
    created = set()
    for name, items in tables.items():
        if name not in have:
            op.create_table(name, *items)
            created.add(name)
    for name, cols in columns.items():
        there = {c["name"] for c in sa.inspect(conn).get_columns(name)}
        for column in cols:
            if column.name not in there:
                op.add_column(name, column)
    return created


def legacy_version(at_least: int) -> Callable[[], None]:
    """The old counter, ``skipsearch_schema.version``, raised to ``at_least`` (its row made if missing): what
    the skipsearch of that version reads before it trusts the tables."""
    def set_it() -> None:
        conn = op.get_bind()
        row = conn.execute(sa.text("SELECT version FROM skipsearch_schema")).first()
        if row is None:
            conn.execute(sa.text("INSERT INTO skipsearch_schema (version) VALUES (:v)"), {"v": at_least})
        elif row[0] < at_least:
            conn.execute(sa.text("UPDATE skipsearch_schema SET version = :v"), {"v": at_least})
    return set_it


def refuse_downgrade() -> None:
    """skipsearch only upgrades: an older skipsearch reads what this one wrote (``skipsearch_schema`` says 3),
    and a database is taken back by restoring a copy, not by dropping what was measured."""
    raise NotImplementedError("skipsearch's revisions do not downgrade; restore a copy of the database instead")
