"""The one place that opens sessions, commits, rolls back and turns database errors into one StorageError.

Callers get typed records (``records``) and DataFrames, never ORM rows. Each write is one transaction, so a
killed driver loses no recorded trial. ``Store(url, create=False)`` is for readers (``best``, ``export``,
``studies``): it never creates a database file or a table, and opens SQLite read-only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (Table, create_engine, delete, func, inspect, select, update)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from skipsearch.errors import StorageError
from skipsearch.results import Extra, Measurement
from skipsearch.storage import tables as t
from skipsearch.storage import opening, revisions, urls
from skipsearch.storage.driver_rows import DriverRows, now_utc
from skipsearch.storage.study_rows import StudyRows
from skipsearch.storage.records import (NUMBERS, TARGET, ConfirmationRow, MeasuredAt, RungRow, StepRow,
                                        TrialRow, columns_of, from_mapping, with_own)

if TYPE_CHECKING:
    import pandas as pd  # imported where a frame is built: ``skipsearch studies`` and the URL checks go without




@dataclass(frozen=True, kw_only=True)
class StudySummary:
    """A study as ``skipsearch studies`` lists it: computed by the store, not a table's row."""

    study_name: str
    created_at: datetime
    complete: int
    pruned: int
    fail: int


class Store(StudyRows, DriverRows):
    def __init__(self, url: str, create: bool = True):
        parsed = urls.parse(url)
        self.url, self.shown_url = url, urls.shown(parsed)
        self.read_only = not create
        self.schema_upgrade: revisions.Upgrade | None = None  # what opening did to the schema (writers only)
        self.sqlite_file = urls.sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
        if not create and self.sqlite_file is not None and not self.sqlite_file.is_file():
            raise StorageError(f"no database at {self.sqlite_file} ({self.shown_url})")
        if create:
            urls.check_writable(parsed)  # before a file, a -wal or a table is made
        # what reads this database as this store does (Optuna's storage for ``report`` too): read-only for readers
        self.reader_url = urls.read_only(url) if not create else url
        try:
            self.engine = create_engine(self.reader_url, **urls.engine_kwargs(url))
            if create:
                opening.watch_sqlite(self.engine)
                opening.check_intact(self.engine, self.sqlite_file)
                self.schema_upgrade = opening.create_schema(self.engine, self.url, self.shown_url)
            else:
                self._open_reader()
        except (SQLAlchemyError, ImportError, ValueError, OSError) as err:  # the driver's own complaints too
            hint = (" (install the database driver, e.g. pip install 'psycopg[binary]' for PostgreSQL)"
                    if isinstance(err, ImportError) else "")
            raise StorageError(self._damaged_line(err) or f"cannot open the database {self.shown_url}: "
                               f"{urls.error_line(err, self.url)}{hint}") from None

    def _open_reader(self) -> None:
        """Check a reader's database. A SQLite file in WAL mode that this user may not write, in a folder it may
        not write either (a colleague's results, a read-only mount), cannot be opened ``mode=ro``: SQLite would
        have to create the ``-shm`` file beside it. It is then read ``immutable`` (``urls.read_only``)."""
        try:
            opening.check_intact(self.engine, self.sqlite_file)
            opening.check_schema(self.engine, self.shown_url)
        except OperationalError:
            path = self.sqlite_file
            if path is None or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
                raise  # not a permission problem: the error stands
            self.engine.dispose()
            self.reader_url = urls.read_only(self.url, immutable=True)
            self.engine = create_engine(self.reader_url, **urls.engine_kwargs(self.url))
            opening.check_intact(self.engine, self.sqlite_file)
            opening.check_schema(self.engine, self.shown_url)

    def _damaged_line(self, err: BaseException) -> str | None:
        return opening.damaged_line(err, self.sqlite_file)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as err:
            if isinstance(err, IntegrityError):
                raise  # two writers disagree about a row: a bug, not a user mistake (errors.py)
            raise StorageError(self._damaged_line(err) or f"database error on {self.shown_url}: "
                               f"{urls.error_line(err, self.url)}") from None

    # --- studies -------------------------------------------------------------------------------------

    def set_winner(self, name: str, trial_number: int) -> None:
        with self.begin() as conn:
            conn.execute(update(t.studies).where(t.studies.c.study_name == name).values(winner_trial=trial_number))

    def winner(self, name: str) -> int | None:
        with self.begin() as conn:
            row = conn.execute(select(t.studies.c.winner_trial).where(t.studies.c.study_name == name)).first()
        return None if row is None else row[0]

    def study_summaries(self) -> list[StudySummary]:
        """Every study, by name, with its creation time and its trials counted by state."""
        counts = (select(t.trials.c.study_name, t.trials.c.state, func.count().label("n"))
                  .group_by(t.trials.c.study_name, t.trials.c.state))
        with self.begin() as conn:
            names = conn.execute(select(t.studies.c.study_name, t.studies.c.created_at)
                                 .order_by(t.studies.c.study_name)).all()
            rows = conn.execute(counts).all()
        n = {(r.study_name, r.state): r.n for r in rows}
        return [StudySummary(study_name=name, created_at=created, complete=n.get((name, "COMPLETE"), 0),
                             pruned=n.get((name, "PRUNED"), 0), fail=n.get((name, "FAIL"), 0))
                for name, created in names]

    def studies_frame(self) -> pd.DataFrame:
        """``study_summaries`` as a frame, one column per field."""
        import pandas as pd

        columns = [f.name for f in fields(StudySummary)]
        return pd.DataFrame([asdict(s) for s in self.study_summaries()], columns=columns)

    def delete_study(self, name: str) -> int:
        """Remove every skipsearch row of a study, in one transaction; returns how many rows went."""
        with self.begin() as conn:
            return sum(conn.execute(delete(table).where(table.c.study_name == name)).rowcount
                       for table in t.PER_STUDY)

    # --- per-trial records ---------------------------------------------------------------------------

    def record_trial(self, row: TrialRow, claim: tuple[str, str] | None = None,
                     measurements: Sequence[Measurement] = ()) -> bool:
        """A trial's row. With ``claim`` = (item, driver id), only while that driver still holds the claim,
        checked in the same transaction: False (nothing written) when another driver took it over.
        ``measurements``: the trial's other numbers (``metric.report``), in the same transaction."""
        at = MeasuredAt(stage="trial", n=row.n)
        return self._insert_claimed(t.trials, columns_of(row), claim,
                                    (at, with_own(row, row.extractor, measurements)), row.extras)

    def trial(self, study: str, number: int) -> TrialRow | None:
        """A trial's record with its numbers (in its feature space), references, extras and dFID."""
        c, m, e = t.trials.c, t.measurements.c, t.extras.c
        with self.begin() as conn:
            row = conn.execute(select(t.trials).where(c.study_name == study, c.trial_number == number)
                               ).mappings().first()
            if row is None:
                return None
            numbers = {(r.domain, r.metric): r.value for r in conn.execute(
                select(m.domain, m.metric, m.value).where(
                    m.study_name == study, m.trial_number == number, m.stage == "trial", m.n == row["n"],
                    m.extractor == row["extractor"], m.metric.in_(NUMBERS)))}
            extras = {r.name: json.loads(r.value_json) for r in conn.execute(
                select(e.name, e.value_json).where(e.study_name == study, e.trial_number == number,
                                                   e.stage == "trial"))}
            base = self._baseline_fid(conn, study) if row["state"] == "COMPLETE" else None
        fid = numbers.get((TARGET, "fid"))
        own = {metric: numbers.get((TARGET, metric)) for metric in NUMBERS}
        return from_mapping(TrialRow, dict(row) | own | {
            "delta_fid": None if base is None or fid is None else fid - base,
            "references": {k: v for k, v in numbers.items() if k[0] != TARGET}, "extras": extras})

    def _baseline_fid(self, conn: Connection, study: str) -> float | None:
        """The completed baseline's FID, which every completed trial's dFID is measured from (None: none yet)."""
        c, m = t.trials.c, t.measurements.c
        q = (select(m.value).select_from(t.trials.join(t.measurements, (m.study_name == c.study_name)
                                                       & (m.trial_number == c.trial_number)))
             .where(c.study_name == study, c.role == "baseline", c.state == "COMPLETE", m.stage == "trial",
                    m.n == c.n, m.extractor == c.extractor, m.domain == TARGET, m.metric == "fid")
             .order_by(c.trial_number))
        return conn.execute(q).scalars().first()

    def record_rung(self, row: RungRow | StepRow, measurements: Sequence[Measurement] = (), *,
                    extractor: str) -> None:
        """An intermediate score: at a sample count (rungs table) or a training step (steps table). Its row names
        no feature space, so ``extractor`` says which its numbers are in (for their measurement rows)."""
        step = isinstance(row, StepRow)
        at = MeasuredAt(stage="step", n=row.n, step=row.step) if step else MeasuredAt(stage="rung", n=row.n)
        self._insert_claimed(t.steps if step else t.rungs, columns_of(row), None,
                             (at, with_own(row, extractor, measurements)))

    def rungs_frame(self, study: str) -> pd.DataFrame:
        """A study's rungs with their FID and KID (``numbers.joined``)."""
        rows = self._frame(select(t.rungs).where(t.rungs.c.study_name == study)
                           .order_by(t.rungs.c.trial_number, t.rungs.c.n))
        return self._joined(study, rows, "rung")

    def steps_frame(self, study: str) -> pd.DataFrame:
        """A study's training steps with their FID, KID and further references' numbers (``numbers.joined``)."""
        rows = self._frame(select(t.steps).where(t.steps.c.study_name == study)
                           .order_by(t.steps.c.trial_number, t.steps.c.step))
        return self._joined(study, rows, "step")

    def record_confirmation(self, row: ConfirmationRow, claim: tuple[str, str] | None = None,
                            measurements: Sequence[Measurement] = ()) -> bool:
        at = MeasuredAt(stage="confirmation", n=row.n, seed_set=row.seed_set)
        return self._insert_claimed(t.confirmations, columns_of(row), claim,
                                    (at, with_own(row, row.extractor, measurements)), row.extras)

    def record_measurements(self, study: str, trial: int, at: MeasuredAt, measurements: Sequence[Measurement],
                            extras: Mapping[str, Extra] | None = None,
                            claim: tuple[str, str] | None = None) -> bool:
        """Numbers with no row of their own (a second opinion's), and what names them (``extras``), in one
        transaction, under ``claim`` where given: False, and nothing written, when the claim was lost."""
        with self.begin() as conn:
            if claim is not None and not self._still_held(conn, study, claim):
                return False
            rows = [{"study_name": study, "trial_number": trial, **asdict(at), **asdict(m), "created_at": now_utc()}
                    for m in measurements]
            if rows:
                conn.execute(t.measurements.insert(), rows)
            if extras:
                conn.execute(t.extras.insert(), [
                    {"study_name": study, "trial_number": trial, **asdict(at), "name": name,
                     "value_json": json.dumps(value), "created_at": now_utc()} for name, value in extras.items()])
        return True

    def replace_extra(self, study: str, trial: int, at: MeasuredAt, name: str, old: Extra, new: Extra) -> bool:
        """Replace one stored extra, only while it still holds ``old`` (False: another driver replaced it first, or
        it is gone); for a record of how a stage would run that a later run may revise (``second_opinion``)."""
        c = t.extras.c
        with self.begin() as conn:
            return bool(conn.execute(update(t.extras).where(
                c.study_name == study, c.trial_number == trial, c.stage == at.stage, c.n == at.n, c.step == at.step,
                c.seed_set == at.seed_set, c.name == name, c.value_json == json.dumps(old))
                .values(value_json=json.dumps(new))).rowcount)

    def has_measurements(self, study: str, trial: int, at: MeasuredAt) -> bool:
        """Whether any number of ``trial`` was stored at ``at`` (stage, N, step, seed set)."""
        c = t.measurements.c
        q = select(c.id).where(c.study_name == study, c.trial_number == trial, c.stage == at.stage, c.n == at.n,
                               c.step == at.step, c.seed_set == at.seed_set)
        with self.begin() as conn:
            return conn.execute(q).first() is not None

    def measurements_frame(self, study: str) -> pd.DataFrame:
        """Every measurement of a study, one row each (``tables.measurements``); none in a database a reader
        opened before its upgrade to the revision that made the table (``revisions.READABLE``)."""
        c = t.measurements.c
        with self.begin() as conn:
            if not inspect(conn).has_table(t.measurements.name):
                import pandas as pd

                return pd.DataFrame(columns=[col.name for col in t.measurements.columns])
        return self._frame(select(t.measurements).where(c.study_name == study)
                           .order_by(c.trial_number, c.stage, c.seed_set, c.n, c.step, c.metric, c.extractor))

    def extras_frame(self, study: str) -> pd.DataFrame:
        """Every method's extra of a study, one row each (``tables.extras``), its value as JSON."""
        c = t.extras.c
        return self._frame(select(t.extras).where(c.study_name == study).order_by(c.trial_number, c.id))

    def _insert_claimed(self, table: Table, values: dict, claim: tuple[str, str] | None,
                        measured: tuple[MeasuredAt, Sequence[Measurement]] | None = None,
                        extras: Mapping[str, Extra] | None = None) -> bool:
        with self.begin() as conn:
            if claim is not None and not self._still_held(conn, values["study_name"], claim):
                return False
            conn.execute(table.insert().values(created_at=now_utc(), **values))
            if measured is not None and measured[1]:
                at, rows = measured
                conn.execute(t.measurements.insert(), [
                    {"study_name": values["study_name"], "trial_number": values["trial_number"], **asdict(at),
                     **asdict(m), "created_at": now_utc()} for m in rows])
            if extras:
                conn.execute(t.extras.insert(), [
                    {"study_name": values["study_name"], "trial_number": values["trial_number"],
                     **asdict(measured[0]), "name": name, "value_json": json.dumps(value), "created_at": now_utc()}
                    for name, value in extras.items()])
        return True

    def has_confirmation(self, study: str, trial: int, seed_set: int, n: int) -> bool:
        c = t.confirmations.c
        q = select(c.id).where(c.study_name == study, c.trial_number == trial, c.seed_set == seed_set, c.n == n)
        with self.begin() as conn:
            return conn.execute(q).first() is not None

    def trials_frame(self, study: str) -> pd.DataFrame:
        """A study's trials with their numbers, references, extras and dFID, in the old table's column order."""
        from skipsearch.storage.numbers import with_delta

        rows = self._frame(select(t.trials).where(t.trials.c.study_name == study).order_by(t.trials.c.trial_number))
        return with_delta(self._joined(study, rows, "trial", rows.extractor))

    def confirmations_frame(self, study: str) -> pd.DataFrame:
        """A study's held-out evaluations with their numbers, references and extras."""
        q = select(t.confirmations).where(t.confirmations.c.study_name == study)
        rows = self._frame(q.order_by(t.confirmations.c.trial_number, t.confirmations.c.seed_set))
        return self._joined(study, rows, "confirmation", rows.extractor)

    def _joined(self, study: str, rows: pd.DataFrame, stage: str, extractor: pd.Series | None = None
                ) -> pd.DataFrame:
        """``rows`` of ``stage`` with their numbers and extras (``numbers.joined``). ``extractor``: each row's
        feature space; a rung or step is in its trial's (or, with no trial row, the study's)."""
        import pandas as pd

        from skipsearch.storage.numbers import joined

        if extractor is None:
            trials = self._frame(select(t.trials.c.trial_number, t.trials.c.extractor)
                                 .where(t.trials.c.study_name == study))
            study_extractor = ((self.study_spec(study) or {}).get("metric") or {}).get("extractor")
            extractor = pd.Series(rows.trial_number.map(dict(zip(trials.trial_number, trials.extractor))),
                                  index=rows.index, dtype=object).fillna(study_extractor)
        return joined(rows, self.measurements_frame(study), self.extras_frame(study), stage, extractor)

    def _frame(self, query) -> pd.DataFrame:
        import pandas as pd

        with self.begin() as conn:
            rows = conn.execute(query).mappings().all()
        cols = [c.name for c in query.selected_columns]
        return pd.DataFrame([dict(r) for r in rows], columns=cols)

    def close(self) -> None:
        self.engine.dispose()
