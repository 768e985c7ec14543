"""The user's light path and the science packages load none of the driver's heavy libraries, and importing
any skipsearch module leaves the environment as it was. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import skipsearch
from skipsearch.exchange import coeffile
from skipsearch.methods.skip_tuning.coefficients import LinearSkip

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
    modules = [m.name for m in pkgutil.walk_packages(skipsearch.__path__, prefix="skipsearch.")
               if not m.name.endswith("__main__")]
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

