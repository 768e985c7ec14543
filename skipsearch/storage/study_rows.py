"""What a study was stored with, as ``Store`` keeps it: its spec (as created, then as its latest run gave the
operational fields), the content hashes of its model and reference, and its model's facts. Several drivers may
register the same study at the same moment: each write is one transaction, the first value stands, and every
method returns what the database holds afterwards.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager

from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from skipsearch.errors import StorageError
from skipsearch.storage import tables as t
from skipsearch.storage import urls
from skipsearch.storage.driver_rows import now_utc


class StudyRows:
    """``Store``'s study registration; it provides ``engine``, ``begin`` (one transaction, errors turned into
    ``StorageError``), ``url`` and ``shown_url``."""

    engine: Engine
    url: str
    shown_url: str

    def begin(self) -> AbstractContextManager[Connection]:  # pragma: no cover - Store's
        raise NotImplementedError

    def save_study(self, name: str, spec: dict) -> dict:
        """Register a study; return the spec it holds already (two drivers may race to create it): the spec it was
        created with, or the latest that ``follow_spec`` stored."""
        for _ in range(2):
            first = self.study_spec(name)
            if first is not None:
                return first
            try:
                with self.engine.begin() as conn:
                    conn.execute(t.studies.insert().values(study_name=name, spec_json=json.dumps(spec),
                                                           created_at=now_utc()))
                return spec
            except IntegrityError:
                continue  # another driver created it first: read theirs
        raise StorageError(f"study {name!r} could not be registered in {self.shown_url}")

    def follow_spec(self, name: str, spec: dict) -> bool:
        """Store ``spec`` as the study's spec when it differs from the stored one (True: it did). The caller has
        checked that the science is the same, so only operational fields (budgets, the confirmation's plan) change:
        readers then judge the study as the latest driver did, instead of by the plan it was created with."""
        text = json.dumps(spec)
        with self.begin() as conn:
            return bool(conn.execute(update(t.studies).where(t.studies.c.study_name == name,
                                                             t.studies.c.spec_json != text)
                                     .values(spec_json=text)).rowcount)

    def study_spec(self, name: str) -> dict | None:
        with self.begin() as conn:
            row = conn.execute(select(t.studies.c.spec_json).where(t.studies.c.study_name == name)).first()
        return json.loads(row[0]) if row else None

    def study_hashes(self, name: str) -> dict[str, str]:
        """The content hashes the study was stored with, by field ("model", "metric.reference", ...)."""
        h = t.study_hashes.c
        with self.begin() as conn:
            return dict(conn.execute(select(h.field, h.hash).where(h.study_name == name)).all())

    def save_study_hashes(self, name: str, hashes: dict[str, str]) -> dict[str, str]:
        """Record the fields not recorded yet (another driver may record them at the same moment: its value is
        kept), and return every hash the study now holds."""
        for field, value in hashes.items():
            try:
                with self.engine.begin() as conn:
                    conn.execute(t.study_hashes.insert().values(study_name=name, field=field, hash=value,
                                                                created_at=now_utc()))
            except IntegrityError:
                continue  # recorded already (by an earlier run, or another driver just now): theirs stands
            except SQLAlchemyError as err:
                raise StorageError(f"database error on {self.shown_url}: {urls.error_line(err, self.url)}") from None
        return self.study_hashes(name)

    def study_facts(self, name: str) -> str | None:
        """The model's facts the study was stored with (``modelfacts.to_json``); None for a study stored before
        skipsearch kept them (in a database that predates them, a reader finds no table at all)."""
        f = t.study_facts.c
        with self.begin() as conn:
            if not inspect(conn).has_table(t.study_facts.name):
                return None
            return conn.execute(select(f.facts_json).where(f.study_name == name)).scalar()

    def save_study_facts(self, name: str, facts_json: str) -> str:
        """Record the study's model facts unless it has them (another driver may record them at the same moment:
        the first stands); return the study's."""
        if self.study_facts(name) is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(t.study_facts.insert().values(study_name=name, facts_json=facts_json,
                                                               created_at=now_utc()))
            except IntegrityError:
                pass  # another driver recorded them just now: theirs stand
            except SQLAlchemyError as err:
                raise StorageError(f"database error on {self.shown_url}: {urls.error_line(err, self.url)}") from None
        return self.study_facts(name) or facts_json

    def recorded_hashes(self, name: str) -> dict[str, set[str]]:
        """The model and reference hashes a study's recorded trials and confirmations carry (a study stored
        before its hashes were, or one to check): {"model": {...}, "metric.reference": {...}}."""
        tr, co = t.trials.c, t.confirmations.c
        with self.begin() as conn:
            models = set(conn.execute(select(tr.model_hash).distinct().where(tr.study_name == name,
                                                                             tr.model_hash.is_not(None))).scalars())
            refs = set(conn.execute(select(tr.ref_hash).distinct().where(tr.study_name == name,
                                                                         tr.ref_hash.is_not(None))).scalars())
            refs |= set(conn.execute(select(co.ref_hash).distinct().where(co.study_name == name,
                                                                          co.ref_hash.is_not(None))).scalars())
        return {"model": models, "metric.reference": refs}
