"""Several drivers on one study, started together: nothing repeated, nothing lost, one baseline, no error, and the
database password nowhere.

    python scripts/drivers_check.py [--storage URL] [--drivers 3] [--trials 15] [--spec SPEC] [--keep DIR]

Starts ``--drivers`` ``skipsearch run`` processes at once (``OMP_NUM_THREADS=1`` each) on one new study, the
URL handed to them only in ``$SKIPSEARCH_STORAGE``. Without ``--storage`` (or ``$SKIPSEARCH_STORAGE``) it starts
a throw-away PostgreSQL server on 127.0.0.1 whose user has a password (``tests/pgserver.py``) and removes it at
the end. The default study is tiny (the embedded digits model, Heun 10 steps, N = 256, held-out top-2 on 2 seed
sets). Afterwards it prints, and exits 1 unless each holds:

- requested: the budget (``--trials``); stored: skipsearch's trial rows that count towards it (equal);
- duplicate coefficient sets among them (0); lost (0): Optuna trials not finished, finished without a row, or
  whose row says another state; baselines (1); errors (0): FAIL rows, non-zero exit codes, tracebacks;
- held-out evaluations: each (candidate, seed set) stored once and computed by one driver;
- password hits (0) in every driver's log and in a dump of the database (``pg_dump``; the file for SQLite).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec(name: str, budget: int) -> dict:
    return {"name": name, "device": "cpu", "sampler": {"name": "heun", "steps": 10},
            "metric": {"n": 256, "seed": 0, "batch_size": 256, "kid_subset_size": 32},
            "search": {"family": "linear", "trials": budget, "rho_range": [0.5, 1.5], "sampler": "tpe", "seed": 3},
            "confirm": {"top_k": 2, "n": 128, "seed_sets": 2, "seed": 10_000}}


def pg_dump(url: str) -> str | None:
    """The PostgreSQL database as SQL text, or None where there is no pg_dump."""
    from sqlalchemy.engine import make_url

    found = shutil.which("pg_dump") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"),
                                                        reverse=True)), None)
    if found is None:
        return None
    u = make_url(url)
    env = os.environ | ({"PGPASSWORD": u.password} if u.password else {})
    cmd = [found, "-h", u.host or "localhost", "-p", str(u.port or 5432), "-U", u.username or "", u.database or ""]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout


def database_text(url: str) -> tuple[str | None, str]:
    """What a leaked password would be found in: a pg_dump, or the SQLite file's bytes; and what it was."""
    from skipsearch.storage import urls

    parsed = urls.parse(url)
    if parsed.get_backend_name() == "sqlite":
        path = urls.sqlite_path(parsed)
        return "".join(Path(f"{path}{s}").read_bytes().decode("latin-1") for s in ("", "-wal")
                       if Path(f"{path}{s}").exists()), "the SQLite file"
    return pg_dump(url), "pg_dump"


def run_drivers(spec: Path, url: str, count: int, budget: int, workdir: Path,
                timeout: float) -> list[tuple[int, float, Path]]:
    """``count`` drivers started together; (exit code, seconds, log) for each."""
    env = os.environ | {"SKIPSEARCH_STORAGE": url, "OMP_NUM_THREADS": "1"}
    env.setdefault("SKIPSEARCH_ARTIFACTS", str(workdir / "artifacts"))  # the drivers' pictures go with their logs
    procs = []
    for i in range(count):
        log = workdir / f"driver-{i + 1}.log"
        procs.append((subprocess.Popen([sys.executable, "-m", "skipsearch", "run", str(spec), "--trials", str(budget)],
                                       stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                       stdin=subprocess.DEVNULL, env=env, cwd=workdir), time.monotonic(), log))
    out = []
    for proc, start, log in procs:
        try:
            code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        out.append((code, time.monotonic() - start, log))
    return out


def check(url: str, study: str, budget: int, spec: dict, drivers: list[tuple[int, float, Path]],
          secret: str | None) -> bool:
    import optuna

    from skipsearch.storage import Store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = Store(url, create=False)
    rows = store.trials_frame(study)
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    store_conf = store.confirmations_frame(study)
    store.close()
    logs = [log.read_bytes().decode("utf-8", "replace") for _, _, log in drivers]

    for i, ((code, seconds, log), text) in enumerate(zip(drivers, logs), 1):
        print(f"driver {i}: exit {code}, {text.count(chr(10) + 'trial ')} trials, {seconds:.1f} s  ({log})")
    counts = [v is None or bool(v) for v in rows.evaluated]
    counted = rows[counts]
    by_row = rows.set_index("trial_number").state.to_dict()
    numbers = {x.number for x in trials}
    unfinished = sum(not x.state.is_finished() for x in trials)
    without_row = sum(x.state.is_finished() and x.number not in by_row for x in trials)
    disagree = sum(x.number in by_row and by_row[x.number] != x.state.name for x in trials)
    orphans = sum(n not in numbers for n in by_row)
    fail_rows = int((rows.state == "FAIL").sum())
    bad_exits = sum(code != 0 for code, _, _ in drivers)
    tracebacks = sum(text.count("Traceback") for text in logs)
    held = (spec["confirm"]["top_k"] + 1) * spec["confirm"]["seed_sets"]
    at_n = store_conf[store_conf.n == spec["confirm"]["n"]]
    computed = sum(text.count("held-out  trial") for text in logs)
    dump, what = database_text(url)
    log_hits = sum(text.count(secret) for text in logs) if secret else 0
    db_hits = dump.count(secret) if secret and dump is not None else 0

    results = [
        ("requested trials (budget)", budget, True, ""),
        ("stored (rows that count)", len(counted), len(counted) == budget, f"of {len(rows)} rows"),
        ("duplicate coefficient sets", len(counted) - counted.coefficients_json.nunique(),
         counted.coefficients_json.is_unique, ""),
        ("lost", unfinished + without_row + disagree + orphans, not (unfinished or without_row or disagree or orphans),
         f"Optuna trials {len(trials)}: unfinished {unfinished}, finished without a row {without_row}, "
         f"state disagreeing {disagree}; rows without a trial {orphans}"),
        ("baselines", int((rows.role == "baseline").sum()), int((rows.role == "baseline").sum()) == 1, ""),
        ("errors", fail_rows + bad_exits + tracebacks, not (fail_rows or bad_exits or tracebacks),
         f"FAIL rows {fail_rows}, non-zero exits {bad_exits}, tracebacks {tracebacks}"),
        ("held-out evaluations", len(at_n), len(at_n) == held == computed and not at_n.duplicated(
            ["trial_number", "seed_set"]).any(), f"expected {held}, computed {computed} times in all"),
        ("password hits", log_hits + db_hits, log_hits + db_hits == 0 and (dump is not None or not secret),
         (f"driver logs {log_hits}, {what} {db_hits} ({sum(map(len, logs))} + "
          f"{'no dump: pg_dump not found' if dump is None else len(dump)} characters searched)") if secret
         else "the URL holds no password: nothing to look for"),
    ]
    for name, value, ok, detail in results:
        print(f"{name:28s} {value:5d}  {'ok  ' if ok else 'FAIL'}  {detail}".rstrip())
    passed = all(ok for _, _, ok, _ in results)
    print("all checks passed" if passed else "SOME CHECKS FAILED")
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", help="database URL (default $SKIPSEARCH_STORAGE, else a throw-away PostgreSQL)")
    parser.add_argument("--drivers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=15, help="the study's budget")
    parser.add_argument("--spec", type=Path, help="a spec of a new study (default: a tiny one, named by the time)")
    parser.add_argument("--keep", type=Path, help="keep the spec and the driver logs in this folder")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the drivers may take in all")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from skipsearch.errors import StorageError
    from skipsearch.specfile import load_spec
    from skipsearch.storage import Store, urls

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="drivers-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url, server = args.storage or os.environ.get(urls.STORAGE_ENV), None
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import pgserver

        server = pgserver.start()
        if isinstance(server, str):
            print(f"drivers_check: no PostgreSQL server to start: {server}", file=sys.stderr)
            return 2
        url = server.create_database("drivers_check")
    try:
        if args.spec is None:
            spec_path, spec = workdir / "spec.yaml", tiny_spec(f"drivers-check-{datetime.now():%Y%m%d-%H%M%S}",
                                                               args.trials)
            spec_path.write_text(yaml.safe_dump(spec))
        else:
            spec_path, spec = args.spec.resolve(), load_spec(args.spec).model_dump(mode="json")
        study = spec["name"]
        try:
            if Store(url, create=False).study_spec(study) is not None:
                print(f"drivers_check: study {study!r} exists in {urls.shown(url)}; give a new one", file=sys.stderr)
                return 2
        except StorageError:
            pass  # no database yet: the drivers make it
        where = "a throw-away server" if server else "given"
        kept = "" if args.keep else ", removed at the end (--keep DIR keeps them)"
        print(f"drivers_check: {args.drivers} drivers on study {study!r}, budget {args.trials}, in "
              f"{urls.shown(url)} ({where}); logs in {workdir}{kept}")
        start = time.monotonic()
        drivers = run_drivers(spec_path, url, args.drivers, args.trials, workdir, args.timeout)
        print(f"all drivers done in {time.monotonic() - start:.1f} s")
        return 0 if check(url, study, args.trials, spec, drivers, urls.password(url)) else 1
    finally:
        if server is not None:
            server.stop()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
