"""Several ``skipsearch run`` processes (drivers) on one study: who is alive, and who may do what.

Every driver registers a row in ``skipsearch_drivers`` and refreshes its heartbeat (the database's clock)
from a background thread. A driver is gone when it stopped cleanly, when it ran on this machine and its
process no longer exists (checked at once, by pid and process start time), or when its heartbeat is older
than the grace period (another machine: the only evidence is the heartbeat).

Work is shared through claims, rows in ``skipsearch_claims`` whose unique key makes taking one atomic on
SQLite and PostgreSQL alike:

- ``lock``: the study lock, held for the short bookkeeping between trials (recover what dead drivers left,
  count the budget, enqueue the baseline, ask Optuna for a trial and claim it). It is a row, not a database
  lock, so Optuna may write while it is held; a dead holder's lock is taken over.
- ``trial:N``: trial N is in flight on this driver. It is released after Optuna is told, so a trial is
  always either claimed or finished, and the budget counts it exactly once.
- ``confirm:T:J:N``: held-out evaluation of trial T on seed set J at N samples is being computed here.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skipsearch.errors import StorageError
from skipsearch.storage import Store

HEARTBEAT_S = float(os.environ.get("SKIPSEARCH_HEARTBEAT_S", 5.0))
GRACE_S = float(os.environ.get("SKIPSEARCH_DRIVER_GRACE_S", 60.0))  # another machine's driver: gone after this
LOCK = "lock"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """This machine and pid namespace: where a pid means the same process."""
    try:
        pid_namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pid_namespace = ""
    return f"{socket.gethostname()}|{_read('/proc/sys/kernel/random/boot_id')}|{pid_namespace}"


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which a reused pid does not share."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def pid_alive(pid: int, start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return start is None or process_start(pid) in (None, start)


class Driver:
    """This process's membership of a study: registered, heart beating, until ``stop()``."""

    MACHINE = machine_id()

    def __init__(self, store: Store, study: str):
        self.store, self.study, self.id = store, study, uuid.uuid4().hex
        pid = os.getpid()
        store.register_driver(driver_id=self.id, study_name=study, machine=self.MACHINE, pid=pid,
                              proc_start=process_start(pid))
        self._stop = threading.Event()
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name=f"skipsearch-heartbeat-{self.id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.store.heartbeat(self.id)
                self._last_beat = time.monotonic()
            except StorageError:
                pass  # the main thread sees the database fail too; check_heartbeat() reports a long silence

    def check_heartbeat(self) -> None:
        """Stop this driver (exit 2) when its heartbeat has failed for half the grace period: other drivers
        would soon take it for dead and recover its trials."""
        silent = time.monotonic() - self._last_beat
        if silent > max(GRACE_S / 2, 2 * HEARTBEAT_S):
            raise StorageError(f"this driver could not write its heartbeat to {self.store.shown_url} for "
                               f"{silent:.0f} s; stopping before other drivers take it for dead")

    def alive(self, driver_id: str | None) -> bool:
        """Whether that driver may still finish what it claimed (an unknown driver is not)."""
        if driver_id == self.id:
            return True
        row = next((d for d in self.store.drivers(self.study) if d["driver_id"] == driver_id), None)
        return row is not None and is_alive(self.store, row)

    def stop(self) -> None:
        """Mark this driver stopped and drop any claim it still holds (it finished or failed them all)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 1)
        self.store.stop_driver(self.id)


def is_alive(store: Store, row: dict) -> bool:
    """A driver row's process may still be working: not stopped, and its pid alive (this machine) or its
    heartbeat recent (another machine)."""
    if row["stopped_at"] is not None:
        return False
    if row["machine"] == Driver.MACHINE:
        return pid_alive(row["pid"], row["proc_start"])
    return (store.db_now() - row["heartbeat_at"]).total_seconds() < GRACE_S


def live_drivers(store: Store, study: str) -> list[dict]:
    return [row for row in store.drivers(study) if is_alive(store, row)]


@contextmanager
def study_lock(driver: Driver) -> Iterator[None]:
    """Hold the study's lock claim for a few database round trips; a dead holder's lock is taken over."""
    store, study = driver.store, driver.study
    while not store.try_claim(study, LOCK, driver.id):
        holder = store.holder(study, LOCK)
        if holder is not None and not driver.alive(holder):
            store.release(study, LOCK, holder)
            continue
        time.sleep(random.uniform(0.02, 0.1))
    try:
        yield
    finally:
        store.release(study, LOCK, driver.id)


def trial_item(number: int) -> str:
    return f"trial:{number}"


def confirm_item(trial: int, seed_set: int, n: int) -> str:
    return f"confirm:{trial}:{seed_set}:{n}"


def claim_item(driver: Driver, item: str, trial: int) -> bool:
    """Whether ``driver`` holds ``item`` of its study now (a held-out or second-opinion evaluation). A holder
    whose driver is gone is let go, so the next round, here or in another driver, takes the item over."""
    store, study = driver.store, driver.study
    if store.try_claim(study, item, driver.id, trial):
        return True
    holder = store.holder(study, item)
    if holder is not None and not driver.alive(holder):
        store.release(study, item, holder)
    return False
