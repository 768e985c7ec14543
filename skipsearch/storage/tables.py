"""skipsearch's tables, beside Optuna's in the same database: as they are now. How a database gets there is the
revisions in ``storage/migrations`` (its revision: ``skipsearch_alembic_version``); ``tests/test_migration.py``
checks that a new database made by them is what these tables describe. Before the revisions, the schema's
version was ``skipsearch_schema.version``, which said 3 through revision 0005 for older skipsearch to read, and
says 4 (``SCHEMA_VERSION``) from 0006 on, whose dropped columns older skipsearch names:

- 1: studies, trials, rungs, confirmations;
- 2: Diff-Tuning columns (source FID, weights, training seed) and the steps table;
- 3: drivers (one row per ``skipsearch run`` process, with its heartbeat), claims (who holds the study
  lock, which trial each driver runs, which held-out evaluation each driver computes), and whether a
  failed trial counts towards the budget (``skipsearch_trials.evaluated``).

``skipsearch_study_hashes`` (the content hashes a study was stored with: its model's weights and each data set
it names, checked at every open, trial and confirmation: ``search.integrity``) came later without a new
version: every writer creates it when missing, and no reader needs it. ``skipsearch_study_facts`` (the study's
model's facts, ``ModelInfo`` as JSON: its skip points, channels, resolution, conditions, stored at the first open:
``storage.facts``) came the same way; readers use it where it exists, and look the model up in a database that
predates it. Revision 0004 is those two tables; 0005 is ``skipsearch_measurements``, every number as one row;
0006 moved the numbers out of the other tables into it (FID, KID and a second reference's, which were columns
of trials, rungs, steps and confirmations; ``delta_fid`` is derived on reading), and a method's own values
(Diff-Tuning's weights file and hash, training seed) into ``skipsearch_extras``.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, Text,
                        UniqueConstraint)

SCHEMA_VERSION = 4  # the old counter, frozen since 0006: the revision is the schema's version now

metadata = MetaData()
schema = Table("skipsearch_schema", metadata, Column("version", Integer, primary_key=True))
studies = Table(
    "skipsearch_studies", metadata,
    Column("study_name", String(256), primary_key=True),
    Column("spec_json", Text, nullable=False),  # the spec as first stored, its storage URL without password
    Column("winner_trial", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


study_hashes = Table(
    "skipsearch_study_hashes", metadata,
    Column("study_name", String(256), primary_key=True),
    Column("field", String(64), primary_key=True),  # "model", or the spec field of a data set: "metric.reference"
    Column("hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
study_facts = Table(
    "skipsearch_study_facts", metadata,
    Column("study_name", String(256), primary_key=True),
    Column("facts_json", Text, nullable=False),  # ``modelfacts.to_json``: what readers need of the model
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def _per_trial(name: str, *columns: Column, key: tuple[str, ...] = ()) -> Table:
    """A table of rows about a study's trials: an id, the study and trial number, the given columns, a
    creation time, and one row per (study, trial, *key)."""
    return Table(name, metadata,
                 Column("id", Integer, primary_key=True, autoincrement=True),
                 Column("study_name", String(256), nullable=False),
                 Column("trial_number", Integer, nullable=False),
                 *columns,
                 Column("created_at", DateTime(timezone=True), nullable=False),
                 UniqueConstraint("study_name", "trial_number", *key))


trials = _per_trial(
    "skipsearch_trials",
    Column("role", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("coefficients_json", Text, nullable=False),
    Column("n", Integer, nullable=False), Column("seed_start", Integer, nullable=False),
    Column("sampler_json", Text, nullable=False), Column("nfe", Integer, nullable=False),
    Column("model_id", String(128), nullable=False), Column("model_hash", String(64)),
    Column("extractor", String(128), nullable=False), Column("ref_hash", String(64)),
    Column("versions_json", Text, nullable=False),
    Column("wall_s", Float), Column("error", Text),
    Column("evaluated", Boolean),  # False: killed, interrupted or stopped by a bug (not in the budget); NULL: True
)
steps = _per_trial(  # a training method's multi-fidelity: intermediate training steps
    "skipsearch_steps",
    Column("step", Integer, nullable=False), Column("n", Integer, nullable=False),
    Column("wall_s", Float),
    key=("step",),
)
rungs = _per_trial(
    "skipsearch_rungs",
    Column("n", Integer, nullable=False),
    Column("wall_s", Float),
    key=("n",),
)
confirmations = _per_trial(
    "skipsearch_confirmations",
    Column("seed_set", Integer, nullable=False),
    Column("seed_start", Integer, nullable=False), Column("n", Integer, nullable=False),
    Column("extractor", String(128), nullable=False), Column("ref_hash", String(64)),
    Column("wall_s", Float),
    key=("seed_set", "n"),
)
measurements = _per_trial(  # every number a metric gave, one row each (``results.Measurement``)
    "skipsearch_measurements",
    Column("stage", String(16), nullable=False),  # "trial", "rung", "step" or "confirmation"
    Column("n", Integer, nullable=False),  # the sample count it was computed on
    Column("step", Integer, nullable=False),  # the training step; -1: not a training method's step
    Column("seed_set", Integer, nullable=False),  # the held-out seed set; -1: the search's seeds
    Column("domain", String(32), nullable=False),  # "target", or a method's second reference ("source")
    Column("metric", String(64), nullable=False),
    Column("extractor", String(128), nullable=False),
    Column("value", Float),
    key=("stage", "n", "step", "seed_set", "domain", "metric", "extractor"),
)
extras = _per_trial(  # what a method keeps of a record under its own names (``records``: ``extras``), as JSON
    "skipsearch_extras",
    Column("stage", String(16), nullable=False), Column("n", Integer, nullable=False),
    Column("step", Integer, nullable=False), Column("seed_set", Integer, nullable=False),  # as measurements'
    Column("name", String(64), nullable=False),
    Column("value_json", Text, nullable=False),
    key=("stage", "n", "step", "seed_set", "name"),
)
drivers = Table(
    "skipsearch_drivers", metadata,
    Column("driver_id", String(32), primary_key=True),
    Column("study_name", String(256), nullable=False),
    Column("machine", String(512), nullable=False),  # host name, boot id and pid namespace
    Column("pid", Integer, nullable=False),
    Column("proc_start", BigInteger),  # the process's start time on its machine (tells a reused pid apart)
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),  # the database's clock
    Column("stopped_at", DateTime(timezone=True)),
)
claims = Table(
    "skipsearch_claims", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(256), nullable=False),
    Column("item", String(128), nullable=False),  # "lock", "trial:N" or "confirm:TRIAL:SEED_SET:N"
    Column("driver_id", String(32), nullable=False),
    Column("trial_number", Integer),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("study_name", "item"),
)
# what deleting a study removes
PER_STUDY = (trials, steps, rungs, confirmations, measurements, extras, drivers, claims, study_hashes, study_facts,
             studies)
