"""skipsearch's schema revisions: an Alembic script directory (``env.py``, ``versions/``), shipped in the package.

The revision a database is at lives in its own version table, ``skipsearch_alembic_version``: Optuna keeps its
own revision in ``alembic_version`` in the same database, and the two histories never mix. ``REVISIONS`` names
the revisions in order, so that readers and an up-to-date writer check a database without importing Alembic
(``tests/test_migration.py`` checks it against the script directory). ``storage.revisions`` runs them.

Before these revisions, skipsearch counted its schema in ``skipsearch_schema.version`` (1, 2, 3); revisions
0001 to 0003 are those versions, and that table keeps saying 3 so that an older skipsearch still reads a
database upgraded by this one. ``LEGACY`` maps each old version to the newest revision it can stand for.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent
VERSION_TABLE = "skipsearch_alembic_version"
REVISIONS = ("0001", "0002", "0003", "0004", "0005")
HEAD = REVISIONS[-1]
# The oldest revision a reader reads without an upgrade: every column a reader's query names is there from
# 0003 on (the study hashes and facts tables, and the measurements table, are read where they exist). So a
# database written by any skipsearch since schema 3 opens for ``best``, ``export`` and ``report`` as it is.
READABLE = "0003"
# skipsearch_schema.version -> the newest revision a database of that version can be (3: 0004 where the two
# tables added later without a version, study hashes and facts, are there)
LEGACY = {1: "0001", 2: "0002", 3: "0004"}
