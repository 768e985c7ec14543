"""What skipsearch costs to start: ``skipsearch.apply`` in a user's sampling code against torch alone, and the
CLI's ``--help`` and read-only verbs (``studies``, ``best``, ``export``) against a bare ``import optuna``.

A verb that only reads a database should cost about what Optuna costs to import, never what torch does: each
command runs in a fresh interpreter, interleaved with the others (a noisy machine slows all of them alike),
and the table gives medians, ratios, peak memory and which heavy libraries each one loaded."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skipsearch.bench.fresh import WATCHED, Sample, cli_command, measure, python_code
from skipsearch.bench.measurements import Record

#: What ``skipsearch.apply`` must not load: the driver's libraries.
HEAVY = ("optuna", "ray", "sqlalchemy", "typer", "pandas")
#: What no CLI verb that only reads (nor any ``--help``) may load.
CLI_HEAVY = ("torch", "ray", "diffusers")
STUDY = "bench-imports"
# Two trials at N = 64 and a small confirmation: the readers have a real winner, with provenance, to read. No
# second opinion: where Inception's weights are installed, its reference statistics alone would take minutes on a
# CPU, and the readers time the same without it.
_SPEC = f"""name: {STUDY}
device: cpu
sampler: {{name: heun, steps: 3}}
metric: {{n: 64, seed: 0, batch_size: 64, kid_subset_size: 32}}
search: {{family: linear, trials: 2, rho_range: [0.5, 1.5], sampler: random, seed: 1}}
confirm: {{top_k: 1, n: 64, seed_sets: 2, seed: 10000, second_opinion: {{extractor: none}}}}
"""


@dataclass(frozen=True)
class Row:
    """One timed command: its label in the table, and how to build its arguments from the study's URL."""

    label: str
    argv: Callable[[str], list[str]]
    versus: str  # the row it is judged against: "import optuna" for the CLI, "import torch" for apply
    target: str | None = None


ROWS = (
    Row("python -c pass", lambda url: python_code("pass"), "import optuna"),
    Row("import optuna", lambda url: python_code("import optuna"), "import optuna"),
    Row("import torch", lambda url: python_code("import torch"), "import optuna"),
    # what any CLI verb that opens a database imports at least: typer (whose option parsing builds pydantic
    # validators) and SQLAlchemy (the store); the floor under ``studies``
    Row("import typer, pydantic, sqlalchemy", lambda url: python_code("import typer, pydantic, sqlalchemy"),
        "import optuna"),
    Row("skipsearch.apply", lambda url: python_code("import skipsearch; skipsearch.apply"), "import torch",
        "<= 1.5"),
    Row("skipsearch --help", lambda url: cli_command(["--help"]), "import optuna", "<= 1.5"),
    Row("skipsearch studies", lambda url: cli_command(["studies", "--storage", url]), "import optuna", "<= 1.5"),
    Row("skipsearch best STUDY", lambda url: cli_command(["best", STUDY, "--storage", url]), "import optuna"),
    Row("skipsearch export STUDY -o f.yaml", lambda url: cli_command(["export", STUDY, "--storage", url, "-o",
                                                                      "f.yaml"]), "import optuna"),
)


def bench_imports(repeats: int = 5, pythonpath: str | None = None) -> list[Record]:
    """Time every row ``repeats`` times in fresh interpreters, interleaved, on a tiny study made first in a
    temporary folder; print the table and return its records. ``pythonpath`` times another checkout of
    skipsearch instead (how the table of an older commit is made: ``bench_imports(pythonpath="/tmp/old")``)."""
    with tempfile.TemporaryDirectory(prefix="skipsearch-bench-imports-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        (Path(tmp) / "spec.yaml").write_text(_SPEC)
        measure("skipsearch run (the study the readers read)", cli_command(["run", "spec.yaml", "--storage", url]),
                tmp, pythonpath)
        samples: dict[str, list[Sample]] = {row.label: [] for row in ROWS}
        for _ in range(repeats):
            for row in ROWS:
                samples[row.label].append(measure(row.label, row.argv(url), tmp, pythonpath))
    return _table(samples, repeats)


def _table(samples: dict[str, list[Sample]], repeats: int) -> list[Record]:
    """Print the medians side by side and turn them into records: each row's seconds and peak memory, its ratio
    to the row it is judged against, and for the CLI how many of torch, Ray and diffusers it loaded."""
    wall = {label: statistics.median(s.wall_s for s in runs) for label, runs in samples.items()}
    rss = {label: statistics.median(s.peak_rss_mib for s in runs) for label, runs in samples.items()}
    print(f"import benchmark: fresh interpreters, median of {repeats} interleaved runs; 'loaded': which of "
          f"{', '.join(WATCHED)} each imported")
    width = max(len(row.label) for row in ROWS)
    print(f"  {'command':{width}s}  seconds  x optuna  x torch  peak RSS MiB  {'target':14s}  loaded")
    records = []
    for row in ROWS:
        loaded = samples[row.label][-1].loaded
        ratio = wall[row.label] / wall[row.versus]
        judged = Record.judged(f"import: {row.label} / {row.versus}", ratio, row.target, "cpu")
        verdict = "" if judged.met is None else f"{row.target} {'met' if judged.met else 'MISSED'}"
        print(f"  {row.label:{width}s}  {wall[row.label]:7.3f}  {wall[row.label] / wall['import optuna']:8.2f}  "
              f"{wall[row.label] / wall['import torch']:7.2f}  {rss[row.label]:12.0f}  {verdict:14s}  "
              f"{', '.join(loaded) or 'none'}")
        records += [Record.judged(f"import: {row.label} seconds", wall[row.label], None, "cpu"),
                    Record.judged(f"import: {row.label} peak RSS MiB", rss[row.label], None, "cpu")]
        if row.label != row.versus:
            records.append(judged)
        if row.label.startswith("skipsearch "):
            forbidden = [name for name in CLI_HEAVY if name in loaded]
            records.append(Record.judged(f"import: {row.label} loads {'/'.join(CLI_HEAVY)}", len(forbidden),
                                         "<= 0", "cpu"))
        elif row.label == "skipsearch.apply":
            records.append(Record.judged(f"import: {row.label} loads {'/'.join(HEAVY)}",
                                         sum(name in loaded for name in HEAVY), "<= 0", "cpu"))
    return records
