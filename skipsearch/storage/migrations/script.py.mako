"""${message}

Revision ${up_revision}, after ${down_revision | comma,n}.
"""

from __future__ import annotations

import sqlalchemy as sa

from skipsearch.storage.migrations.shape import apply, refuse_downgrade

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def tables() -> dict[str, list]:
    """The tables this revision creates."""
    return {}


def columns() -> dict[str, list[sa.Column]]:
    """The columns this revision adds to tables already there."""
    return {}


def upgrade() -> None:
    apply(tables(), columns())


downgrade = refuse_downgrade
