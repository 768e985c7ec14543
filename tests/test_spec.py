"""Specs: every shipped one validates; a bad one is answered with its field and reason, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skipsearch.errors import UserError
from skipsearch.specfile import load_spec, parse_spec

STUDIES = sorted((Path(__file__).parents[1] / "studies").glob("*.yaml"))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skipsearch", *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=600)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_specs_validate(path):
    spec = load_spec(path)
    assert spec.name == path.stem


def test_demo_spec_exists():
    assert any(p.name == "demo-skip.yaml" for p in STUDIES)


BAD = [
    ("wrong-type", {"metric": {"n": "many"}}, "metric.n", "valid integer"),
    ("unknown-field", {"metrik": {"n": 5}}, "metrik", "unknown field"),
    ("negative-n", {"metric": {"n": -100}}, "metric.n", "greater than 0"),
]


@pytest.mark.parametrize("label, patch, field, reason", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_exits_2_naming_field_and_reason(tmp_path, label, patch, field, reason):
    path = tmp_path / f"{label}.yaml"
    path.write_text(yaml.safe_dump({"name": label, **patch}))
    proc = cli("run", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr and reason in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "x.db").exists()  # nothing is created for a spec that does not validate


def test_parse_errors_name_every_field():
    with pytest.raises(UserError) as err:
        parse_spec({"name": "x", "sampler": {"steps": 0}, "search": {"rho_range": [1.1, 2.0]}, "extra": 1})
    text = str(err.value)
    assert "sampler.steps" in text and "search: rho_range must contain 1" in text and "extra: unknown field" in text


def test_overlapping_heldout_seeds_are_refused():
    with pytest.raises(UserError, match="held-out seeds must be new"):
        parse_spec({"name": "x", "metric": {"n": 500, "seed": 0}, "confirm": {"seed": 100}})


@pytest.mark.parametrize("content, message", [("name: [unclosed", "not valid YAML"), ("- a list", "YAML mapping")])
def test_unreadable_spec_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "s.yaml"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_spec(path)


def test_missing_spec_file_exits_2(tmp_path):
    proc = cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "spec file not found" in proc.stderr
