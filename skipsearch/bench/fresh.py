"""One command in a fresh Python interpreter: its wall time, its peak memory, and which heavy libraries it
loaded. Start-up cost is what a user waits for on every ``skipsearch --help``, so it is measured the way a user
meets it: a new process each time, nothing cached in this one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

#: The libraries whose import dominates start-up time and memory.
WATCHED = ("torch", "ray", "diffusers", "optuna", "pandas", "sqlalchemy", "typer")
_MARK = "skipsearch-bench-loaded:"

# Run at exit, so that a command ending in sys.exit (every typer command) still reports; it imports nothing the
# command did not. Peak memory is the child's own: VmHWM of the address space exec gave it. The kernel's
# ru_maxrss (RUSAGE_CHILDREN, wait4, /usr/bin/time) also counts the forking parent's pages from before exec, so
# a small command measured from a larger benchmark process would read as large as the benchmark itself.
_REPORT = f"""import atexit, sys


def _skipsearch_bench_report():
    peak = None
    try:
        with open("/proc/self/status") as status:
            peak = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), None)
    except OSError:
        pass
    if peak is None:  # no /proc (macOS): ru_maxrss, in bytes there
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({WATCHED!r}))
    print({_MARK!r} + str(peak) + ":" + ",".join(loaded), flush=True)


atexit.register(_skipsearch_bench_report)
"""


@dataclass(frozen=True)
class Sample:
    """One run: seconds from start to exit, peak resident memory, and the watched libraries it had loaded."""

    wall_s: float
    peak_rss_mib: float
    loaded: tuple[str, ...]


def python_code(code: str) -> list[str]:
    """Arguments that run ``code`` in a fresh interpreter."""
    return [sys.executable, "-c", _REPORT + code]


def cli_command(args: Sequence[str]) -> list[str]:
    """Arguments that run ``skipsearch ARGS`` in a fresh interpreter, as the installed script does."""
    return [sys.executable, "-c", _REPORT + "from skipsearch.cli import main\nmain()", *args]


def measure(label: str, argv: list[str], cwd: str, pythonpath: str | None = None) -> Sample:
    """Run ``argv`` once; a failing command is an error naming ``label`` (a traceback's timing means nothing).
    ``pythonpath`` puts another checkout of skipsearch first (the benchmark of an older tree)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{label!r} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-2000:]}")
    reported = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if not reported:
        raise RuntimeError(f"{label!r} did not report its modules:\n{(proc.stdout + proc.stderr)[-2000:]}")
    peak_kib, _, names = reported[-1].removeprefix(_MARK).partition(":")
    return Sample(wall_s=wall, peak_rss_mib=int(peak_kib) / 1024, loaded=tuple(n for n in names.split(",") if n))
