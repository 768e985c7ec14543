"""A real PostgreSQL server for the suite: Debian's binaries, a throw-away cluster, 127.0.0.1 only.

The cluster's user has a password (``PASSWORD``), so tests can check that it never leaks. Where the server
binaries or the psycopg driver are absent, ``start`` returns None and the caller skips with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "skipsearch"
PASSWORD = "pg-Secret-4711-never-printed"


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    root: Path
    port: int
    bindir: Path
    as_user: list[str]

    def url(self, database: str, with_password: bool = True) -> str:
        secret = f":{PASSWORD}" if with_password else ""
        return f"postgresql+psycopg://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def dump(self, database: str) -> str:
        """pg_dump of one database, as text (what a leaked password would be found in)."""
        env = os.environ | {"PGPASSWORD": PASSWORD}
        return subprocess.run([str(self.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                               database], capture_output=True, text=True, check=True, env=env).stdout

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Server | str:
    """A running server, or the reason there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is absent: pip install 'psycopg[binary]'"
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        return "PostgreSQL's server binaries are absent: apt-get install postgresql"
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="skipsearch-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as another user"
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True)  # noqa: E731
    init = run(str(bindir / "initdb"), "-D", str(root / "data"), "-U", USER, "--pwfile", str(pwfile),
               "--auth=scram-sha-256", "-E", "UTF8", "--locale=C")
    if init.returncode != 0:
        return f"initdb failed: {init.stderr.strip()[-300:]}"
    started = run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                  f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off", "start")
    if started.returncode != 0:
        return f"pg_ctl start failed: {started.stderr.strip()[-300:]}"
    server = Server(root, port, bindir, as_user)
    for _ in range(50):
        try:
            server.create_database("probe")
            return server
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.2)
    server.stop()
    return "the PostgreSQL server did not accept connections"
