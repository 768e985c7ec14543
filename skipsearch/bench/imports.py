"""What ``skipsearch.apply`` costs a user's sampling code to import."""

from __future__ import annotations

import statistics
import time

from skipsearch.bench.records import Record

HEAVY = ("optuna", "ray", "sqlalchemy", "typer", "pandas")


def bench_imports(repeats: int = 5) -> list[Record]:
    """What a user's sampling code pays for ``skipsearch.apply``: its import time against torch's alone, each
    in a fresh interpreter, interleaved (medians), and which of the driver's heavy libraries it loads."""
    import json
    import subprocess
    import sys

    report = f"import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    codes = {"torch": "import torch", "skipsearch.apply": "import skipsearch; skipsearch.apply"}
    walls: dict[str, list[float]] = {name: [] for name in codes}
    outputs: dict[str, str] = {}
    for _ in range(repeats):
        for name, code in codes.items():
            start = time.perf_counter()
            outputs[name] = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True,
                                           text=True, check=True).stdout
            walls[name].append(time.perf_counter() - start)
    loaded = json.loads(outputs["skipsearch.apply"].strip().splitlines()[-1])
    torch_s, apply_s = (statistics.median(walls[name]) for name in codes)
    print(f"import benchmark: fresh interpreters, median of {repeats} interleaved runs")
    print(f"  python -c 'import torch'                          {torch_s:6.2f} s")
    print(f"  python -c 'import skipsearch; skipsearch.apply'   {apply_s:6.2f} s")
    verdict = "met" if apply_s / torch_s <= 1.5 else "MISSED"
    print(f"  skipsearch.apply / torch                          {apply_s / torch_s:6.2f}   target <= 1.5: {verdict}")
    print(f"  heavy libraries loaded by skipsearch.apply: {', '.join(loaded) or 'none'} (of {', '.join(HEAVY)})")
    return [Record.judged("import: skipsearch.apply / torch", apply_s / torch_s, "<= 1.5", "cpu")]


