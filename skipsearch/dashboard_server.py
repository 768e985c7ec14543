"""``skipsearch dashboard``: the real optuna-dashboard over a study database, on 127.0.0.1.

Everything it shows was written into the Optuna study by the driver (``search.annotations``): the metric's
name, the study's facts and note, each trial's numbers, note and pictures. The pictures live in the artifact
store beside the database (``storage.artifacts``), which the dashboard is given here.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skipsearch.dashboards import dashboard_settings
from skipsearch.errors import UserError
from skipsearch.storage import Store, engine_kwargs, urls
from skipsearch.storage.artifacts import artifact_dir, artifact_store


@dataclass(frozen=True, kw_only=True)
class Served:
    url: str  # where to point a browser
    storage: str  # password masked
    artifacts: Path | None  # None: no study has stored pictures yet


def check_port(host: str, port: int) -> None:
    """Refuse a taken port with a message, before optuna-dashboard's own traceback would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                why = "in use" if err.errno == errno.EADDRINUSE else "not allowed"
                raise UserError(f"port {port} on {host} is {why}; pass another one with --port") from None
            raise


def serve(storage: str | None = None, port: int | None = None,
          echo: Callable[[str], None] = print) -> None:
    """Serve optuna-dashboard until interrupted. The database must hold a skipsearch study already."""
    settings = dashboard_settings()
    port = settings.port if port is None else port
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    url = urls.choose(storage)
    urls.parse(url)
    Store(url, create=False).close()  # a missing database or a non-skipsearch one: one clear message
    check_port(settings.host, port)
    import optuna
    from optuna_dashboard import run_server

    rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), skip_table_creation=True)
    store = artifact_store(url, create=False)
    served = Served(url=f"http://{settings.host}:{port}/dashboard/", storage=urls.shown(url),
                    artifacts=artifact_dir(url) if store is not None else None)
    where = served.artifacts or f"none yet ({artifact_dir(url)} is created by the first trial)"
    echo(f"optuna-dashboard for {served.storage} at {served.url} (artifacts: {where}); Ctrl-C stops it")
    try:
        run_server(rdb, host=settings.host, port=port, artifact_store=store)
    except OSError as err:  # taken between the check and optuna-dashboard's bind
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {settings.host} is in use; pass another one with --port") from None
        raise
