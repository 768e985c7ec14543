"""The drivers of a shared study and their claims, as ``Store`` keeps them: who runs, who last beat, and which
driver holds which item (a trial, a held-out evaluation). ``skipsearch.search.coordination`` builds its rules on
these; each method is one transaction, and a claim is decided by the table's unique key alone.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timezone

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from skipsearch.storage import tables as t


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | str | None) -> datetime | None:
    """Datetimes read back from SQLite lose their time zone; all of skipsearch's are UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


class DriverRows:
    """``Store``'s drivers and claims; it provides ``engine`` and ``begin`` (one transaction, errors turned into
    ``StorageError`` except an ``IntegrityError``, which a claim reads as "held by another")."""

    engine: Engine

    def begin(self) -> AbstractContextManager[Connection]:  # pragma: no cover - Store's
        raise NotImplementedError

    def db_now(self) -> datetime:
        """The database's clock, which every driver of a shared study reads alike."""
        with self.begin() as conn:
            if self.engine.dialect.name == "sqlite":  # SQLite's clock is this machine's, in UTC, as text
                return aware(datetime.fromisoformat(conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', "
                                                                       "'now')")).scalar()))
            return aware(conn.execute(select(func.now())).scalar())

    def register_driver(self, **values) -> None:
        now = self.db_now()
        with self.begin() as conn:
            conn.execute(t.drivers.insert().values(**values, started_at=now, heartbeat_at=now))

    def heartbeat(self, driver_id: str) -> None:
        now = self.db_now()
        with self.begin() as conn:
            conn.execute(update(t.drivers).where(t.drivers.c.driver_id == driver_id).values(heartbeat_at=now))

    def stop_driver(self, driver_id: str) -> None:
        now = self.db_now()
        with self.begin() as conn:
            conn.execute(update(t.drivers).where(t.drivers.c.driver_id == driver_id).values(stopped_at=now))
            conn.execute(delete(t.claims).where(t.claims.c.driver_id == driver_id))

    def drivers(self, study: str) -> list[dict]:
        with self.begin() as conn:
            rows = conn.execute(select(t.drivers).where(t.drivers.c.study_name == study)).mappings().all()
        return [dict(r) | {k: aware(r[k]) for k in ("started_at", "heartbeat_at", "stopped_at")} for r in rows]

    def try_claim(self, study: str, item: str, driver_id: str, trial_number: int | None = None) -> bool:
        """Insert a claim; False if another driver holds it (the unique key decides, atomically)."""
        try:
            with self.begin() as conn:  # begin() lets an IntegrityError through as it is
                conn.execute(t.claims.insert().values(study_name=study, item=item, driver_id=driver_id,
                                                      trial_number=trial_number, claimed_at=now_utc()))
            return True
        except IntegrityError:
            return False

    def holder(self, study: str, item: str) -> str | None:
        """The driver holding a claim, if any."""
        q = select(t.claims.c.driver_id).where(t.claims.c.study_name == study, t.claims.c.item == item)
        with self.begin() as conn:
            return conn.execute(q).scalar()

    def claims(self, study: str, prefix: str = "") -> list[dict]:
        q = select(t.claims).where(t.claims.c.study_name == study, t.claims.c.item.startswith(prefix))
        with self.begin() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

    def release(self, study: str, item: str, driver_id: str | None = None) -> None:
        """Drop a claim (only ``driver_id``'s, when given: a claim taken over meanwhile stays)."""
        where = [t.claims.c.study_name == study, t.claims.c.item == item]
        if driver_id is not None:
            where.append(t.claims.c.driver_id == driver_id)
        with self.begin() as conn:
            conn.execute(delete(t.claims).where(*where))

    @staticmethod
    def _still_held(conn: Connection, study: str, claim: tuple[str, str]) -> bool:
        """Whether ``claim`` (item, driver) is still this driver's; the write locks the claim row until commit."""
        item, driver_id = claim
        return bool(conn.execute(update(t.claims).where(
            t.claims.c.study_name == study, t.claims.c.item == item,
            t.claims.c.driver_id == driver_id).values(driver_id=driver_id)).rowcount)
