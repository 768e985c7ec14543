"""The user's light path and the science packages load none of the driver's heavy libraries, and importing
any skipsearch module leaves the environment as it was. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest
from conftest import tiny_spec_dict

import skipsearch
from skipsearch.exchange import coeffile
from skipsearch.methods.skip_tuning.schedules import LinearSkip
from skipsearch.specfile import parse_spec

HEAVY = ("optuna", "ray", "sqlalchemy", "typer", "pandas")
SCIENCE = ("skipsearch.diffusion", "skipsearch.models", "skipsearch.hooks", "skipsearch.metrics", "skipsearch.data",
           "skipsearch.evaluate", "skipsearch.results", "skipsearch.methods")
REPORT = f"import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_apply_loads_no_heavy_library(tmp_path):
    path = coeffile.write(coeffile.CoefficientFile(LinearSkip(rho_top=1.1, rho_bottom=0.9)), tmp_path / "c.toml")
    code = ("import skipsearch, torch\n"
            "model = skipsearch.load_model('embedded-digits').denoiser\n"
            f"with skipsearch.apply(model, {str(path)!r}):\n"
            "    model(torch.zeros(1, 1, 16, 16), torch.tensor([1.0]))")
    assert _loaded(code) == []


def test_science_packages_load_no_heavy_library():
    modules = [m for pkg in SCIENCE for m in _walk(pkg)]
    assert len(modules) > 25  # the walk found the packages' modules, not just their names
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    assert _loaded(code) == []


def _walk(name: str):
    """The module and, for a package, every module below it (benchmarks drive whole studies: left out)."""
    yield name
    module = __import__(name, fromlist=["_"])
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
        if not info.name.endswith(".bench"):
            yield info.name


def test_importing_any_module_leaves_the_environment_alone():
    # Alembic's env.py is a script Alembic runs with its context set up, not a module to import
    modules = [m.name for m in pkgutil.walk_packages(skipsearch.__path__, prefix="skipsearch.")
               if not m.name.endswith(("__main__", "migrations.env"))]
    code = ("import importlib, os\nbefore = dict(os.environ)\n"
            + "".join(f"importlib.import_module({m!r})\n" for m in modules)
            + "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
            + "assert not changed, changed")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_workers_without_ray_is_a_clear_error(tmp_path):
    """Ray is an optional extra: asking for workers without it says how to get it (exit 2), and stores nothing."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: no-ray\nmetric: {n: 64, kid_subset_size: 32}\n")
    code = ("import sys; sys.modules['ray'] = None\nfrom skipsearch.cli import main\n"
            f"sys.argv = ['skipsearch', 'run', {str(spec)!r}, '--workers', '2', '--storage', "
            f"'sqlite:///{tmp_path / 'x.db'}']\nmain()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'skipsearch[ray]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_dir_lists_every_verb_without_loading_them():
    code = ("import skipsearch\n"
            "names = dir(skipsearch)\n"
            "assert set(skipsearch.__all__) <= set(names), sorted(set(skipsearch.__all__) - set(names))\n"
            "assert {'run', 'best', 'export', 'apply', 'verify', 'Verdict'} <= set(skipsearch.__all__)")
    assert _loaded(code) == []  # listing the verbs imports none of the heavy libraries behind them


# --- the CLI: --help and the verbs that only read a database -------------------------------------------------------

# torch, Ray and diffusers are the science's and the driver's; a reader (and any --help) loads none of them. --help
# and ``studies`` go without pandas and Optuna too, and --help without SQLAlchemy: it opens no database.
NEVER_FOR_READERS = {"torch", "ray", "diffusers"}
WATCHED = sorted(NEVER_FOR_READERS | {"optuna", "pandas", "sqlalchemy", "typer"})


@pytest.fixture(scope="module")
def reader_study(tmp_path_factory):
    """A small real study (2 trials, held-out confirmation) in a SQLite file, for the readers to read."""
    tmp = tmp_path_factory.mktemp("readers")
    url = f"sqlite:///{tmp / 'study.db'}"
    spec = tiny_spec_dict("readers", search={"trials": 2}, confirm={"n": 64})
    skipsearch.run(parse_spec(spec), storage=url)
    return url, tmp


def _cli_loads(args: list[str], cwd) -> tuple[set[str], str]:
    """Run ``skipsearch ARGS`` in a fresh interpreter; which watched libraries it had loaded when it exited (the
    CLI ends in sys.exit, so the report is printed in ``finally``), and what it printed."""
    report = f"print('loaded:' + json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({WATCHED!r}))))"
    code = (f"import json, sys\nsys.argv = ['skipsearch', *{args!r}]\ntry:\n    from skipsearch.cli import main\n"
            f"    main()\nfinally:\n    {report}")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("loaded:"))
    return set(json.loads(line.removeprefix("loaded:"))), proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["export", "--help"]], ids=" ".join)
def test_help_loads_no_heavy_library(args, tmp_path):
    loaded, out = _cli_loads(args, tmp_path)
    assert "Usage: skipsearch" in out and "typer" in loaded  # the help was printed, and the report saw imports
    assert not loaded & (NEVER_FOR_READERS | {"optuna", "pandas", "sqlalchemy"}), loaded


def test_studies_reads_without_torch_optuna_or_pandas(reader_study):
    url, tmp = reader_study
    loaded, out = _cli_loads(["studies", "--storage", url], tmp)
    assert "readers" in out and "sqlalchemy" in loaded  # it did open the database and list the study
    assert not loaded & (NEVER_FOR_READERS | {"optuna", "pandas"}), loaded


def test_best_and_export_read_without_torch_ray_or_diffusers(reader_study):
    url, tmp = reader_study
    loaded, out = _cli_loads(["best", "readers", "--storage", url], tmp)
    assert "study readers" in out and "held-out" in out and "sqlalchemy" in loaded
    assert not loaded & NEVER_FOR_READERS, loaded
    loaded, out = _cli_loads(["export", "readers", "--storage", url, "-o", "best.yaml"], tmp)
    assert coeffile.read(tmp / "best.yaml").provenance.study == "readers"  # a whole file, with provenance
    assert not loaded & NEVER_FOR_READERS, loaded
