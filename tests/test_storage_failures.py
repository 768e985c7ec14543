"""Passwords and unfriendly databases (issue 25, findings 4 and 5).

A password in a URL's query string (``?password=``, which libpq and psycopg accept) is masked wherever one in the
user-info part is: printed lines, error messages, the stored spec, ``export``'s provenance, the HTML report.
A database that cannot be written is read by the readers (``best``, ``export``, ``studies``, ``report``) and
refused by ``run`` with one message before anything is written; a damaged SQLite file is one message naming it
(exit 2) for every command; an empty ``--storage`` or ``$SKIPSEARCH_STORAGE`` is refused, not replaced by
``./skipsearch.db``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_spec_dict
from typer.testing import CliRunner

from skipsearch import api
from skipsearch.cli import app
from skipsearch.storage import Store, urls

QUICK = {"search": {"trials": 1}, "confirm": {"top_k": 0, "n": 16, "seed_sets": 1},
         "metric": {"n": 16, "batch_size": 16, "kid_subset_size": 8}}
STUDY = "unfriendly"
READERS = (["studies"], ["best", STUDY], ["export", STUDY, "-o", "{out}/e.yaml"], ["report", STUDY, "-o",
                                                                                    "{out}/r.html"])
# no capability that lets root ignore permission bits: root then meets them as any user does
NO_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search,-fowner",
               "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def _digest(*paths: Path) -> dict[str, str | None]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> Path:
    """One small real study (2 trials) in a SQLite file; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("study")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(STUDY, storage=f"sqlite:///{folder / 'study.db'}", **QUICK)))
    api.run(spec, echo=lambda line: None)
    with sqlite3.connect(folder / "study.db") as conn:  # everything into the file itself, so a copy of it is whole
        mode, busy = conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert mode == "wal" and busy.fetchone()[0] == 0  # as skipsearch leaves it: a WAL database
    return folder / "study.db"


def _spec_file(folder: Path, **overrides) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(STUDY, **QUICK) | overrides))
    return path


# --- finding 4: passwords ---------------------------------------------------------------------------------

def test_a_query_string_password_is_masked_by_every_url_helper():
    url = "postgresql+psycopg://alice:user-Info-77@db:5432/x?sslmode=require&password=query-Secret-88"
    assert urls.passwords(url) == ["user-Info-77", "query-Secret-88"]
    assert urls.shown(url) == "postgresql+psycopg://alice:***@db:5432/x?password=***&sslmode=require"
    assert urls.without_password(url) == "postgresql+psycopg://alice@db:5432/x?sslmode=require"
    assert urls.for_command_line("postgresql+psycopg://a@db/x?password=query-Secret-88") == '"$SKIPSEARCH_STORAGE"'
    urls.parse("postgresql+psycopg://a@db/x?password=p%40ss-Word-99")  # known from now on, as given and encoded
    assert urls.scrub("p@ss-Word-99 and p%40ss-Word-99") == "*** and ***"


def test_a_query_string_password_is_in_no_output_of_an_unreachable_database(tmp_path):
    secret = "Sekrit-Query-9911"
    spec = _spec_file(tmp_path)
    url = f"postgresql+psycopg://alice@127.0.0.1:1/db?password={secret}"  # nothing listens on port 1
    for result in (_cli("run", str(spec), "--storage", url), _cli("best", STUDY, "--storage", url),
                   _cli("studies", env={urls.STORAGE_ENV: url})):
        assert result.exit_code == 2, result.output
        assert secret not in result.output and "password=***" in result.output, result.output
    assert list(tmp_path.iterdir()) == [spec]  # nothing written beside the spec


def test_a_query_string_password_never_reaches_output_files_or_the_database(postgres, tmp_path):
    """The probe's way: a PostgreSQL study whose URL carries ``?password=`` (in the spec, then in --storage):
    run, best, export, studies, report; then grep every output, the written files and a pg_dump."""
    import pgserver

    postgres.create_database("querysecret")
    url = postgres.url("querysecret", with_password=False) + f"?password={pgserver.PASSWORD}"
    spec = _spec_file(tmp_path, storage=url)
    results = [_cli("run", str(spec))] + [_cli(*(a.format(out=tmp_path) for a in args), "--storage", url)
                                          for args in READERS]
    assert [r.exit_code for r in results] == [0] * 5, [r.output[-400:] for r in results]
    text = "".join(r.output for r in results)
    files = "".join(p.read_text() for p in (tmp_path / "e.yaml", tmp_path / "r.html"))
    dump = postgres.dump("querysecret")
    assert (text.count(pgserver.PASSWORD), files.count(pgserver.PASSWORD), dump.count(pgserver.PASSWORD)) == (0, 0, 0)
    assert yaml.safe_load((tmp_path / "e.yaml").read_text())["provenance"]["storage"].endswith("?password=***")
    assert "password=***" in text  # the run's "results go to" line: masked, not left out
    assert "skipsearch@127.0.0.1" in dump  # the stored spec keeps the URL, without its password


# --- finding 5: read-only, damaged and empty storage ------------------------------------------------------

def test_run_refuses_a_read_only_url_and_writes_nothing(study_db, tmp_path):
    db = Path(shutil.copy(study_db, tmp_path / "x.db"))
    before = _digest(db, Path(f"{db}-wal"))
    spec = _spec_file(tmp_path)
    for url in (f"sqlite:///{db}?mode=ro", f"sqlite:///{tmp_path / 'new.db'}?mode=ro",
                f"sqlite:///{db}?immutable=1"):
        result = _cli("run", str(spec), "--storage", url)
        assert result.exit_code == 2, result.output
        assert "opened read-only" in result.output and "Traceback" not in result.output
        assert result.output.count("error:") == 1
    assert _digest(db, Path(f"{db}-wal")) == before and not (tmp_path / "new.db").exists()
    reader = _cli("best", STUDY, "--storage", f"sqlite:///{db}?mode=ro")  # a reader may say so
    assert reader.exit_code == 0, reader.output


def _as_unprivileged(folder: Path) -> list[str]:
    """The command prefix under which the permission bits of ``folder`` (chmod 555 by the caller) hold: none for
    a user, ``setpriv`` without the override capabilities for root; a skip where neither can be had."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: chmod cannot make a file read-only for root")
    probe = subprocess.run([*NO_OVERRIDE, "touch", str(folder / "probe")], capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip(f"setpriv could not drop root's override capabilities here ({probe.stderr.strip()[:200]})")
    return NO_OVERRIDE


READ_ONLY_SCRIPT = """
import json, sys
from typer.testing import CliRunner
from skipsearch.cli import app
answers = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[1])]
print(json.dumps([[r.exit_code, r.output] for r in answers]))
"""


def test_a_read_only_file_in_a_read_only_folder_is_read_and_refused_for_writing(study_db, tmp_path):
    folder, out = tmp_path / "ro", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    db = Path(shutil.copy(study_db, folder / "study.db"))
    spec = _spec_file(out)
    url = f"sqlite:///{db}"
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        prefix = _as_unprivileged(folder)
        before = sorted(p.name for p in folder.iterdir()), _digest(db)
        commands = [[*(a.format(out=out) for a in args), "--storage", url] for args in READERS]
        commands.append(["run", str(spec), "--storage", url])
        done = subprocess.run([*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, json.dumps(commands)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        answers = json.loads(done.stdout.splitlines()[-1])
        after = sorted(p.name for p in folder.iterdir()), _digest(db)
    finally:
        folder.chmod(0o755)
    assert [code for code, _ in answers] == [0, 0, 0, 0, 2], [text[-400:] for _, text in answers]
    assert STUDY in answers[0][1] and f"study {STUDY} (Skip-Tuning): trial" in answers[1][1]
    assert (out / "e.yaml").is_file() and (out / "r.html").is_file()
    refusal = answers[4][1]
    assert refusal.count("error:") == 1 and f"the database file {db} is read-only" in refusal, refusal
    assert after == before  # no -wal, no -shm, no artifact folder, the file unchanged


def _damaged(study_db: Path, folder: Path) -> dict[str, Path]:
    """Three ways a SQLite file goes bad: junk bytes, a truncated copy, a copy with a b-tree page overwritten."""
    folder.mkdir()
    good = study_db.read_bytes()
    junk = folder / "junk.db"
    junk.write_bytes(bytes(range(256)) * 40)
    truncated = folder / "truncated.db"
    truncated.write_bytes(good[:len(good) // 3])
    with sqlite3.connect(study_db) as conn:  # the page of skipsearch's trials table
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'skipsearch_trials'").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    bad = bytearray(good)
    start = (root - 1) * page
    bad[start + 100:start + page] = bytes((i * 13) % 251 for i in range(page - 100))
    overwritten = folder / "overwritten.db"
    overwritten.write_bytes(bytes(bad))
    return {"junk": junk, "truncated": truncated, "overwritten": overwritten}


def test_a_damaged_database_is_one_message_naming_the_file_for_every_command(study_db, tmp_path):
    spec = _spec_file(tmp_path)
    files = _damaged(study_db, tmp_path / "bad")
    before = _digest(*files.values())
    for kind, path in files.items():
        url = f"sqlite:///{path}"
        for args in (["run", str(spec)], *READERS):
            result = _cli(*(a.format(out=tmp_path) for a in args), "--storage", url)
            said = f"{kind} {args[0]}: {result.output[-600:]}"
            assert result.exit_code == 2, said
            assert result.output.count("error:") == 1 and f"the SQLite file {path} is damaged" in result.output, said
    assert _digest(*files.values()) == before  # run wrote nothing into them
    beside = {p.name for p in (tmp_path / "bad").iterdir()} - {p.name for p in files.values()}
    assert all(name.endswith(("-wal", "-shm")) for name in beside), beside  # no artifact folder left behind
    assert not (tmp_path / "e.yaml").exists() and not (tmp_path / "r.html").exists()


def test_the_store_refuses_a_damaged_file_when_opened(study_db, tmp_path):
    from skipsearch.errors import StorageError

    files = _damaged(study_db, tmp_path / "bad")
    for path in files.values():
        for create in (True, False):
            with pytest.raises(StorageError, match="is damaged"):
                Store(f"sqlite:///{path}", create=create)
    Store(f"sqlite:///{study_db}", create=False).close()  # the intact file opens


def test_an_empty_storage_is_refused_not_replaced_by_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _spec_file(tmp_path)
    answers = [_cli("run", str(spec), "--storage", ""), _cli("studies", "--storage", " "),
               _cli("studies", env={urls.STORAGE_ENV: ""}), _cli("best", STUDY, env={urls.STORAGE_ENV: ""})]
    assert [r.exit_code for r in answers] == [2, 2, 2, 2], [r.output for r in answers]
    assert "--storage is empty" in answers[0].output and "--storage is empty" in answers[1].output
    assert all(f"${urls.STORAGE_ENV} is set but empty" in r.output for r in answers[2:])
    assert not (tmp_path / "skipsearch.db").exists()
    empty_in_spec = _cli("run", str(_spec_file(tmp_path, storage="")), env={urls.STORAGE_ENV: None})
    assert empty_in_spec.exit_code == 2 and "database URL is empty" in empty_in_spec.output, empty_in_spec.output
    assert not (tmp_path / "skipsearch.db").exists()
