"""Database URLs: checked before anything is opened, and never shown or stored with their password.

skipsearch supports SQLite (one machine; the default ``sqlite:///skipsearch.db``) and PostgreSQL (several
drivers on several machines). A URL may come from ``--storage``, from ``$SKIPSEARCH_STORAGE`` (which keeps
a password out of shell history and printed hints), or from the spec's ``storage:`` field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote

from skipsearch.errors import StorageError, UserError

if TYPE_CHECKING:  # SQLAlchemy where a URL is parsed: the CLI's start (every --help) reads only the names here
    from sqlalchemy.engine import URL

STORAGE_ENV = "SKIPSEARCH_STORAGE"
BACKENDS = ("sqlite", "postgresql")
SQLITE_TIMEOUT_S = 60
EXAMPLES = "sqlite:///skipsearch.db, or postgresql+psycopg://USER@HOST:5432/DB with the password in $PGPASSWORD"


# Query parameters that carry a secret: libpq and psycopg take the password from ``?password=`` as readily as
# from the user-info part (``user:PASSWORD@host``), which is all SQLAlchemy's ``hide_password`` masks.
SECRET_PARAMS = ("password", "sslpassword")
MASK = "***"

SECRETS: set[str] = set()  # passwords of URLs seen in this process, scrubbed from anything printed


def scrub(text: str) -> str:
    """The text with every known password replaced by ***."""
    for secret in sorted(SECRETS, key=len, reverse=True):  # a longer secret first: it may contain a shorter one
        text = text.replace(secret, MASK)
    return text


def error_line(err: BaseException, url: str | URL) -> str:
    """One line about a database error, with the URL's passwords (and any other known one) scrubbed out."""
    line = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    for secret in passwords(url):
        line = line.replace(secret, MASK)
    return scrub(line)


def _remember(secrets: list[str]) -> None:
    """Add a URL's passwords to SECRETS, as given and as they appear percent-encoded in the URL's text."""
    for secret in secrets:
        if len(secret) >= 3:  # shorter ones would mangle every message
            SECRETS.update({secret, quote(secret, safe=""), quote_plus(secret, safe="")})


def parse(url: object, field: str = "storage") -> URL:
    """The URL, parsed and checked: a supported database, a usable port, no in-memory SQLite."""
    if not isinstance(url, str) or not url.strip():
        raise UserError(f"{field}: the database URL is empty; e.g. {EXAMPLES}")
    if any(ord(ch) < 32 for ch in url):
        raise UserError(f"{field}: the database URL holds a control character (e.g. a NUL byte)")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        raise UserError(f"{field}: not a valid database URL (e.g. {EXAMPLES})") from None
    _remember(passwords(parsed))
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


def _parsed(url: str | URL) -> URL | None:
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return None


def shown(url: str | URL) -> str:
    """The URL as it may be printed, logged or written into a file: every password masked, in the user-info part
    and in the query string alike."""
    parsed = _parsed(url)
    if parsed is None:
        return "(an unparsable database URL)"
    placeholder = "%2A%2A%2A"  # how MASK is rendered as a query value
    query = {k: (MASK if k in SECRET_PARAMS else v) for k, v in parsed.query.items()}
    text = parsed.set(query=query).render_as_string(hide_password=True)
    for key in SECRET_PARAMS:
        text = text.replace(f"{key}={placeholder}", f"{key}={MASK}")
    return text


def without_password(url: str | URL) -> str:
    """The URL as it may be stored: no password at all (the user supplies it again to reconnect)."""
    from sqlalchemy.engine import URL, make_url

    parsed = url if isinstance(url, URL) else make_url(url)
    parsed = parsed.difference_update_query(SECRET_PARAMS)
    return parsed._replace(password=None).render_as_string(hide_password=False)  # URL.set(password=None) keeps it


def passwords(url: str | URL | None) -> list[str]:
    """Every secret a URL carries: the user-info password and the query's ``password=``/``sslpassword=``."""
    parsed = None if url is None else _parsed(url)
    if parsed is None:
        return []
    found = [str(parsed.password)] if parsed.password else []
    for key in SECRET_PARAMS:
        value = parsed.query.get(key)
        found += [v for v in ([value] if isinstance(value, str) else value or ()) if v]
    return found


def password(url: str | URL | None) -> str | None:
    """The URL's first password (user-info or query string), or None: does it carry one at all?"""
    found = passwords(url)
    return found[0] if found else None


def for_command_line(url: str) -> str:
    """How a printed hint names the database: the URL itself, or ``"$SKIPSEARCH_STORAGE"`` where the URL
    holds a password (a masked ``***`` could not be pasted back)."""
    if password(url) is None:
        return url
    return f'"${STORAGE_ENV}"'


def choose(given: str | None, spec_storage: str | None = None) -> str:
    """--storage, else $SKIPSEARCH_STORAGE, else the spec's ``storage:``, else ``sqlite:///skipsearch.db``.

    Given but empty is a refusal, not a step to the next source: ``--storage "$DB"`` with ``$DB`` unset, or an
    empty ``$SKIPSEARCH_STORAGE``, would otherwise quietly read or write ``./skipsearch.db``. Only a variable that
    is not set at all falls back."""
    if given is not None:
        if not given.strip():
            raise UserError(f"--storage is empty; give a database URL (e.g. {EXAMPLES}), or leave --storage out to "
                            f"use ${STORAGE_ENV} or the spec's storage")
        return given
    env = os.environ.get(STORAGE_ENV)
    if env is not None:
        if not env.strip():
            raise UserError(f"${STORAGE_ENV} is set but empty; give it a database URL (e.g. {EXAMPLES}), or unset "
                            f"it (unset {STORAGE_ENV}) to fall back to the spec's storage, else sqlite:///skipsearch.db")
        return env
    return spec_storage if spec_storage is not None else "sqlite:///skipsearch.db"


def engine_kwargs(url: str) -> dict:
    """Shared by skipsearch's engine and Optuna's RDBStorage: SQLite waits for locks instead of failing."""
    from sqlalchemy.engine import make_url

    return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if make_url(url).get_backend_name() == "sqlite" else {}


def sqlite_pragmas(dbapi_conn) -> None:
    """What every writer's SQLite connection sets: WAL (readers go on while a driver writes) and a wait for a
    lock held by another process rather than an instant "database is locked"."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
    cur.close()


def read_only(url: str, immutable: bool = False) -> str:
    """A SQLite URL opened read-only (a missing file is an error, never created); others unchanged.

    ``immutable``: for a file SQLite cannot open read-only otherwise (a WAL database in a folder this user may not
    write, where SQLite cannot create the ``-shm`` file that readers share): no locks and no ``-shm``, so it reads
    the file as it stands; only a reader's last resort, as it does not see a writer's changes while it reads."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    path = quote(str(sqlite_path(parsed).resolve()))
    query = {"immutable": "1"} if immutable else {"mode": "ro"}
    return parsed.set(database=f"file:{path}", query=query | {"uri": "true"}).render_as_string(hide_password=False)


READ_ONLY_PARAMS = {"mode": ("ro",), "immutable": ("1", "true", "yes", "on")}


def read_only_param(url: str | URL) -> str | None:
    """The query parameter that makes a SQLite URL read-only (``mode=ro``, ``immutable=1``), or None."""
    parsed = _parsed(url)
    if parsed is None or parsed.get_backend_name() != "sqlite":
        return None
    for key, values in READ_ONLY_PARAMS.items():
        value = parsed.query.get(key)
        if isinstance(value, str) and value.lower() in values:
            return f"{key}={value}"
    return None


def check_writable(url: str | URL) -> None:
    """Refuse, before anything is written, a database a writer (``run``, ``delete``) could not write: a SQLite URL
    marked read-only, a SQLite file this user may not write, or a folder it may not write in (SQLite keeps its
    ``-wal`` and ``-shm`` files beside the database, and creates the database there). PostgreSQL says so itself."""
    from sqlalchemy.engine import URL

    parsed = url if isinstance(url, URL) else parse(url)
    if parsed.get_backend_name() != "sqlite":
        return
    readers = "best, export, studies and report can still read it"
    param = read_only_param(parsed)
    if param is not None:
        raise StorageError(f"the database {shown(parsed)} is opened read-only ({param}), and this command writes to "
                           f"it; give the URL without ?{param} ({readers})")
    path = sqlite_path(parsed)
    if path.exists() and not os.access(path, os.W_OK):
        raise StorageError(f"the database file {path} is read-only, and this command writes to it; make it writable "
                           f"(chmod u+w) or copy it somewhere you can write ({readers})")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        if path.exists():
            raise StorageError(f"the database file {path}: its folder {path.parent} is read-only, and SQLite writes "
                               f"its -wal and -shm files there; use a writable folder ({readers})")
        raise StorageError(f"cannot create the database file {path}: its folder {path.parent} is read-only")
