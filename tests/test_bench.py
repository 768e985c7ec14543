"""`skipsearch bench` runs end to end and reports a consistent breakdown (no timing thresholds here)."""

from __future__ import annotations

import json

import yaml
from conftest import tiny_spec_dict
from test_spec import cli


def test_bench_prints_breakdown_and_writes_the_records(tmp_path):
    spec = tmp_path / "b.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict("b")))
    proc = cli("bench", "--spec", str(spec), "--trials", "1", "--quick", "--json", "out/bench.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    values = {}
    for line in proc.stdout.splitlines():
        label, _, rest = line.strip().partition("  ")
        if rest.strip():
            values[label] = rest.split()[0]
    wall, net, feat = (float(values[k]) for k in ("trial wall time", "network forward passes", "feature extraction"))
    ratio = float(values["(network + features)/wall"])
    assert 0.0 < net + feat <= wall
    assert abs(ratio - (net + feat) / wall) < 0.02  # printed values are rounded to 1 ms
    assert not list(tmp_path.glob("*.db"))  # the benchmark leaves no database behind
    records = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert records and all(set(r) == {"name", "value", "target", "met", "device"} for r in records)
    by_name = {r["name"]: r for r in records}
    share = by_name["trial: share of wall time outside network and features"]
    assert share["target"] == "< 0.05" and share["met"] == (share["value"] < 0.05) and share["device"] == "cpu"
    agreement = [r for r in records if r["name"].startswith("KID") and "relative difference" in r["name"]]
    assert agreement and all(r["met"] for r in agreement)  # KID equals torch-fidelity's for the same subsets
    assert any(r["name"].startswith("common random numbers") for r in records)
    saved = next(r for r in records if r["name"].startswith("shared trajectories: share of network evaluations"))
    assert 0.0 < saved["value"] < 1.0  # the baseline computes all its steps; some windows open late
    assert by_name["shared trajectories: largest relative FID difference from whole"]["value"] == 0.0


def test_bench_imports_times_apply_and_the_readers(tmp_path):
    """One run of each command (``--repeats 1``): the table's ratios are its own seconds divided, the readers ran
    on the study the benchmark made (they exit 0 or the benchmark fails), and what each loaded is recorded."""
    proc = cli("bench", "--imports", "--repeats", "1", "--json", "imports.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        label, _, rest = line.strip().partition("  ")
        if rest.strip() and rest.split()[0].replace(".", "", 1).isdigit():
            rows[label] = rest.split()
    assert {"import optuna", "import torch", "skipsearch.apply", "skipsearch --help", "skipsearch studies",
            "skipsearch best STUDY", "skipsearch export STUDY -o f.yaml"} <= set(rows)
    optuna_s, torch_s = float(rows["import optuna"][0]), float(rows["import torch"][0])
    help_s, help_x_optuna = float(rows["skipsearch --help"][0]), float(rows["skipsearch --help"][1])
    assert abs(help_x_optuna - help_s / optuna_s) < 0.01 * help_x_optuna + 0.01
    apply_s, apply_x_torch = float(rows["skipsearch.apply"][0]), float(rows["skipsearch.apply"][2])
    assert abs(apply_x_torch - apply_s / torch_s) < 0.01 * apply_x_torch + 0.01
    assert rows["import torch"][-1] == "torch" and rows["python -c pass"][-1] == "none"  # the report sees imports
    records = {r["name"]: r for r in json.loads((tmp_path / "imports.json").read_text())}
    for verb in ("--help", "studies", "best STUDY", "export STUDY -o f.yaml"):
        loads = records[f"import: skipsearch {verb} loads torch/ray/diffusers"]
        assert loads["target"] == "<= 0" and loads["met"] == (loads["value"] == 0)
    assert records["import: skipsearch.apply loads optuna/ray/sqlalchemy/typer/pandas"]["value"] == 0
    assert records["import: skipsearch --help / import optuna"]["target"] == "<= 1.5"
    assert records["import: skipsearch studies peak RSS MiB"]["value"] > 0
    assert not list(tmp_path.glob("*.db"))  # the study lived in a temporary folder
