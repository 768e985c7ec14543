"""skipsearch's own tables, in the same database as Optuna's storage.

This is the one place that opens sessions, commits, rolls back and turns database errors into one clear
StorageError; callers get plain dicts and DataFrames, never ORM rows. Each write is one transaction, so
a killed driver loses no recorded trial.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pandas as pd
from sqlalchemy import (Column, DateTime, Float, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        create_engine, event, inspect, select, text, update)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from skipsearch.errors import StorageError, UserError

SCHEMA_VERSION = 2  # 2: Diff-Tuning columns (source FID, weights, training seed) and the steps table
SQLITE_TIMEOUT_S = 60

metadata = MetaData()
schema = Table("skipsearch_schema", metadata, Column("version", Integer, primary_key=True))
studies = Table(
    "skipsearch_studies", metadata,
    Column("study_name", String(256), primary_key=True),
    Column("spec_json", Text, nullable=False),
    Column("winner_trial", Integer, nullable=True),
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
    Column("fid", Float), Column("kid", Float), Column("kid_std", Float), Column("delta_fid", Float),
    Column("n", Integer, nullable=False), Column("seed_start", Integer, nullable=False),
    Column("sampler_json", Text, nullable=False), Column("nfe", Integer, nullable=False),
    Column("model_id", String(128), nullable=False), Column("model_hash", String(64)),
    Column("extractor", String(128), nullable=False), Column("ref_hash", String(64)),
    Column("versions_json", Text, nullable=False),
    Column("wall_s", Float), Column("error", Text),
    Column("source_fid", Float), Column("source_kid", Float),  # Diff-Tuning: FID on the pre-training domain
    Column("weights_path", Text), Column("weights_hash", String(64)),  # Diff-Tuning: the fine-tuned state dict
)
steps = _per_trial(  # Diff-Tuning's multi-fidelity: target FID at intermediate fine-tuning steps
    "skipsearch_steps",
    Column("step", Integer, nullable=False), Column("n", Integer, nullable=False),
    Column("fid", Float, nullable=False), Column("kid", Float),
    Column("source_fid", Float), Column("source_kid", Float),
    Column("wall_s", Float),
    key=("step",),
)
rungs = _per_trial(
    "skipsearch_rungs",
    Column("n", Integer, nullable=False),
    Column("fid", Float, nullable=False), Column("kid", Float),
    Column("wall_s", Float),
    key=("n",),
)
confirmations = _per_trial(
    "skipsearch_confirmations",
    Column("seed_set", Integer, nullable=False),
    Column("seed_start", Integer, nullable=False), Column("n", Integer, nullable=False),
    Column("fid", Float, nullable=False), Column("kid", Float), Column("kid_std", Float),
    Column("extractor", String(128), nullable=False), Column("ref_hash", String(64)),
    Column("wall_s", Float),
    Column("source_fid", Float), Column("source_kid", Float), Column("train_seed", Integer),
    key=("seed_set", "n"),
)


def safe_url(url: str) -> str:
    """The URL as it may be printed or logged: the password is masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        raise UserError("storage URL is not a valid SQLAlchemy URL (e.g. sqlite:///skipsearch.db, "
                        "postgresql+psycopg://user@host/db)") from None


def engine_kwargs(url: str) -> dict:
    """Shared by skipsearch's engine and Optuna's RDBStorage: SQLite waits for locks instead of failing."""
    return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if make_url(url).get_backend_name() == "sqlite" else {}


def _sqlite_wal(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
        cur.close()


def _add_missing_columns(conn: Connection) -> None:
    """Upgrade a database made by an older skipsearch: add the nullable columns it lacks, keep every row."""
    inspector = inspect(conn)
    for table in (trials, confirmations):
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
    conn.execute(update(schema).values(version=SCHEMA_VERSION))


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    def __init__(self, url: str):
        self.url, self.shown_url = url, safe_url(url)
        try:
            self.engine = create_engine(url, **engine_kwargs(url))
            if self.engine.dialect.name == "sqlite":
                _sqlite_wal(self.engine)
            with self.begin() as conn:
                metadata.create_all(conn)
                row = conn.execute(select(schema.c.version)).first()
                if row is None:
                    conn.execute(schema.insert().values(version=SCHEMA_VERSION))
                elif row[0] < SCHEMA_VERSION:
                    _add_missing_columns(conn)
        except (SQLAlchemyError, ImportError) as err:
            hint = (" (install the database driver, e.g. pip install 'psycopg[binary]' for PostgreSQL)"
                    if isinstance(err, ImportError) else "")
            raise StorageError(f"cannot open the database {self.shown_url}: {type(err).__name__}: "
                               f"{str(err).splitlines()[0]}{hint}") from None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as err:
            raise StorageError(f"database error on {self.shown_url}: {type(err).__name__}: "
                               f"{str(err).splitlines()[0]}") from None

    def save_study(self, name: str, spec: dict) -> dict:
        """Register a study; return the spec it was first created with."""
        with self.begin() as conn:
            row = conn.execute(select(studies).where(studies.c.study_name == name)).mappings().first()
            if row is None:
                conn.execute(studies.insert().values(study_name=name, spec_json=json.dumps(spec), created_at=_now()))
                return spec
            return json.loads(row["spec_json"])

    def study_spec(self, name: str) -> dict | None:
        with self.begin() as conn:
            row = conn.execute(select(studies.c.spec_json).where(studies.c.study_name == name)).first()
        return json.loads(row[0]) if row else None

    def set_winner(self, name: str, trial_number: int) -> None:
        with self.begin() as conn:
            conn.execute(update(studies).where(studies.c.study_name == name).values(winner_trial=trial_number))

    def winner(self, name: str) -> int | None:
        with self.begin() as conn:
            row = conn.execute(select(studies.c.winner_trial).where(studies.c.study_name == name)).first()
        return None if row is None else row[0]

    def record_trial(self, **values) -> None:
        with self.begin() as conn:
            conn.execute(trials.insert().values(created_at=_now(), **values))

    def trial(self, study: str, number: int) -> dict | None:
        with self.begin() as conn:
            q = select(trials).where(trials.c.study_name == study, trials.c.trial_number == number)
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def fill_missing_deltas(self, study: str, baseline_fid: float) -> None:
        """Set dFID on completed trials that were recorded before the baseline finished."""
        where = (trials.c.study_name == study, trials.c.state == "COMPLETE", trials.c.delta_fid.is_(None))
        with self.begin() as conn:
            conn.execute(update(trials).where(*where).values(delta_fid=trials.c.fid - baseline_fid))

    def record_rung(self, **values) -> None:
        with self.begin() as conn:
            conn.execute(rungs.insert().values(created_at=_now(), **values))

    def rungs_frame(self, study: str) -> pd.DataFrame:
        return self._frame(select(rungs).where(rungs.c.study_name == study).order_by(rungs.c.trial_number, rungs.c.n))

    def record_step(self, **values) -> None:
        with self.begin() as conn:
            conn.execute(steps.insert().values(created_at=_now(), **values))

    def steps_frame(self, study: str) -> pd.DataFrame:
        return self._frame(select(steps).where(steps.c.study_name == study).order_by(steps.c.trial_number,
                                                                                      steps.c.step))

    def record_confirmation(self, **values) -> None:
        with self.begin() as conn:
            conn.execute(confirmations.insert().values(created_at=_now(), **values))

    def trials_frame(self, study: str) -> pd.DataFrame:
        return self._frame(select(trials).where(trials.c.study_name == study).order_by(trials.c.trial_number))

    def confirmations_frame(self, study: str) -> pd.DataFrame:
        q = select(confirmations).where(confirmations.c.study_name == study)
        return self._frame(q.order_by(confirmations.c.trial_number, confirmations.c.seed_set))

    def _frame(self, query) -> pd.DataFrame:
        with self.begin() as conn:
            rows = conn.execute(query).mappings().all()
        cols = [c.name for c in query.selected_columns]
        return pd.DataFrame([dict(r) for r in rows], columns=cols)

    def close(self) -> None:
        self.engine.dispose()
