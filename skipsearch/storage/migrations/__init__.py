"""skipsearch's schema revisions: an Alembic script directory (``env.py``, ``versions/``), shipped in the package.

The revision a database is at lives in its own version table, ``skipsearch_alembic_version``: Optuna keeps its
own revision in ``alembic_version`` in the same database, and the two histories never mix. ``REVISIONS`` names
the revisions in order, so that readers and an up-to-date writer check a database without importing Alembic
(``tests/test_migration.py`` checks it against the script directory). ``storage.revisions`` runs them.

Before these revisions, skipsearch counted its schema in ``skipsearch_schema.version`` (1, 2, 3); revisions
0001 to 0003 are those versions. That table said 3 through 0005, which an older skipsearch still read and wrote;
0006 dropped columns that older skipsearch names, and set it to 4. ``LEGACY`` maps each old version to the newest
revision it can stand for.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent
VERSION_TABLE = "skipsearch_alembic_version"
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
HEAD = REVISIONS[-1]
# The oldest revision a reader reads without an upgrade: from 0006 on, every number is a measurement row (read
# where it exists, the study hashes and facts tables). An older database is upgraded once by a writer
# (``skipsearch upgrade``, or any ``skipsearch run`` on it), which a reader's message says.
READABLE = "0006"
# skipsearch_schema.version -> the newest revision a database of that version can be (3: 0004 where the two
# tables added later without a version, study hashes and facts, are there; 4: only ever set by 0006)
LEGACY = {1: "0001", 2: "0002", 3: "0004", 4: "0006"}
