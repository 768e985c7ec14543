"""Database URLs: checked before anything is opened, and never shown or stored with their password.

skipsearch supports SQLite (one machine; the default ``sqlite:///skipsearch.db``) and PostgreSQL (several
drivers on several machines). A URL may come from ``--storage``, from ``$SKIPSEARCH_STORAGE`` (which keeps
a password out of shell history and printed hints), or from the spec's ``storage:`` field.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from skipsearch.errors import UserError

STORAGE_ENV = "SKIPSEARCH_STORAGE"
BACKENDS = ("sqlite", "postgresql")
SQLITE_TIMEOUT_S = 60
EXAMPLES = "sqlite:///skipsearch.db, or postgresql+psycopg://USER@HOST:5432/DB with the password in $PGPASSWORD"


SECRETS: set[str] = set()  # passwords of URLs seen in this process, scrubbed from anything printed


def scrub(text: str) -> str:
    """The text with every known password replaced by ***."""
    for secret in SECRETS:
        text = text.replace(secret, "***")
    return text


def error_line(err: BaseException, url: str | URL) -> str:
    """One line about a database error, with the URL's password (and any other known one) scrubbed out."""
    line = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    secret = password(url)
    return scrub(line.replace(secret, "***") if secret else line)


def parse(url: object, field: str = "storage") -> URL:
    """The URL, parsed and checked: a supported database, a usable port, no in-memory SQLite."""
    if not isinstance(url, str) or not url.strip():
        raise UserError(f"{field}: the database URL is empty; e.g. {EXAMPLES}")
    if any(ord(ch) < 32 for ch in url):
        raise UserError(f"{field}: the database URL holds a control character (e.g. a NUL byte)")
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        raise UserError(f"{field}: not a valid database URL (e.g. {EXAMPLES})") from None
    if parsed.password and len(str(parsed.password)) >= 3:  # shorter ones would mangle every message
        SECRETS.add(str(parsed.password))
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise UserError(f"{field}: unsupported database {backend!r}; valid: {', '.join(BACKENDS)} (e.g. {EXAMPLES})")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise UserError(f"{field}: port {parsed.port} is out of range (1-65535)")
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise UserError(f"{field}: an in-memory SQLite database would vanish when the run ends; give a file, "
                            f"e.g. sqlite:///skipsearch.db")
        folder = sqlite_path(parsed).parent
        if not folder.is_dir():
            raise UserError(f"{field}: the folder {folder} of the SQLite file does not exist")
    return parsed


def sqlite_path(url: URL) -> Path:
    """The file of a SQLite URL (``sqlite:///file:PATH?uri=true`` too)."""
    database = url.database or ""
    if url.query.get("uri") == "true" and database.startswith("file:"):
        database = unquote(database.removeprefix("file:").split("?", 1)[0])
    return Path(database).expanduser()


def shown(url: str | URL) -> str:
    """The URL as it may be printed or logged: the password masked."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return "(an unparsable database URL)"
    return parsed.render_as_string(hide_password=True)


def without_password(url: str | URL) -> str:
    """The URL as it may be stored: no password at all (the user supplies it again to reconnect)."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed._replace(password=None).render_as_string(hide_password=False)  # URL.set(password=None) keeps it


def password(url: str | URL) -> str | None:
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return None
    return parsed.password or None


def for_command_line(url: str) -> str:
    """How a printed hint names the database: the URL itself, or ``"$SKIPSEARCH_STORAGE"`` where the URL
    holds a password (a masked ``***`` could not be pasted back)."""
    if password(url) is None:
        return url
    return f'"${STORAGE_ENV}"'


def choose(given: str | None, spec_storage: str | None = None) -> str:
    """--storage, else $SKIPSEARCH_STORAGE, else the spec's ``storage:``."""
    return given or os.environ.get(STORAGE_ENV) or spec_storage or "sqlite:///skipsearch.db"


def engine_kwargs(url: str) -> dict:
    """Shared by skipsearch's engine and Optuna's RDBStorage: SQLite waits for locks instead of failing."""
    return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if make_url(url).get_backend_name() == "sqlite" else {}


def read_only(url: str) -> str:
    """A SQLite URL opened read-only (a missing file is an error, never created); others unchanged."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    path = quote(str(sqlite_path(parsed).resolve()))
    return parsed.set(database=f"file:{path}", query={"mode": "ro", "uri": "true"}).render_as_string(
        hide_password=False)
