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


def test_bench_imports_reports_the_apply_path(tmp_path):
    proc = cli("bench", "--imports", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.strip().split("  ")[0]: line for line in proc.stdout.splitlines()}
    assert "heavy libraries loaded by skipsearch.apply: none" in proc.stdout
    torch_s = float(lines["python -c 'import torch'"].split()[-2])
    apply_s = float(lines["python -c 'import skipsearch; skipsearch.apply'"].split()[-2])
    ratio = float(lines["skipsearch.apply / torch"].split()[3])
    assert torch_s > 0 and abs(ratio - apply_s / torch_s) < 0.02 * ratio + 0.01
