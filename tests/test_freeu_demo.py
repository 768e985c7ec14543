"""The shipped FreeU demo and what its study shows.

``studies/demo-freeu.yaml`` parses and resolves as shipped, on the pipeline shipped in ``studies/models/digits-text``
(safetensors only, small). A tiny-budget copy of it, with its commented ``combine_skip: true`` line switched on and
``confirm.n`` equal to ``metric.n`` (one N, no rungs), runs through the CLI; then:

- the study is called "FreeU + Skip-Tuning" by the run's header, ``best`` (text and JSON), the report and the
  study's ``method`` attribute, and its tables show both halves of its coefficients;
- the report's FID-against-1/N figure says in the figure why it draws no FID-inf line, on an axis from 0;
- its export lists only the settings DDIM reads (no EDM sigma range), and ``verify`` reproduces it; a file written
  before, listing the sigma range too, still reads and verifies.

An EDM (heun) study keeps its sigma range in the export.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_spec_dict
from test_spec import cli

from skipsearch import api
from skipsearch.exchange import coeffile
from skipsearch.diffusion import kinds
from skipsearch.htmlreport import gather
from skipsearch.resolve import resolve
from skipsearch.spec import SamplerSpec
from skipsearch.specfile import load_spec, parse_spec

pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "studies" / "demo-freeu.yaml"
MODEL = ROOT / "studies" / "models" / "digits-text"
KARRAS = set(kinds.KARRAS)
COMBINED = "FreeU + Skip-Tuning"


def _demo(combine: bool = False) -> dict:
    """The shipped demo as a dict, its model paths absolute (a copy elsewhere reads the shipped folder); with
    ``combine`` its commented ``combine_skip: true`` line switched on, nothing else changed."""
    text = DEMO.read_text()
    raw = yaml.safe_load(text.replace("# combine_skip: true", "combine_skip: true") if combine else text)
    raw["model"] = {**raw["model"], "path": str(MODEL), "prompts": str(MODEL / "prompts.txt")}
    return raw


def test_the_shipped_demo_parses_and_resolves_on_the_shipped_pipeline():
    spec = load_spec(DEMO)
    assert spec.kind == "freeu" and not spec.search.combine_skip
    assert Path(spec.model.path) == MODEL and Path(spec.model.prompts) == MODEL / "prompts.txt"
    resolved = resolve(spec, str(DEMO))
    assert resolved.info.freeu and resolved.info.resolution == 16 and len(resolved.info.conditions) == 10
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in files) < 1_000_000
    assert parse_spec(_demo(combine=True), "demo copy").search.combine_skip  # the one line is the whole switch


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """The demo with its combine line on, at a tiny budget: 2 trials of 64 samples at 3 DDIM steps, the winner
    confirmed at the same N on 2 seed sets (one N: no FID-inf line is possible). Run by the CLI, then reported."""
    folder = tmp_path_factory.mktemp("freeu-demo")
    raw = _demo(combine=True) | {"name": "demo-freeu-tiny", "device": "cpu"}
    raw["sampler"]["steps"] = 3
    raw["metric"] |= {"n": 64, "batch_size": 64, "kid_subset_size": 32}
    raw["search"] |= {"sampler": "random", "seed": 1}
    raw["confirm"] = {"top_k": 1, "n": 64, "seed_sets": 2, "seed": 10_000, "second_opinion": {"extractor": "none"}}
    spec = folder / "demo-freeu-tiny.yaml"
    spec.write_text(yaml.safe_dump(raw))
    url = f"sqlite:///{folder / 'freeu.db'}"
    proc = cli("run", str(spec), "--storage", url, "--trials", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = api.report(url, ["demo-freeu-tiny"], folder / "report.html").read_text()
    return url, proc.stdout, page


def test_a_combined_study_is_named_for_both_methods_everywhere(combined):
    url, out, page = combined
    assert f"Study demo-freeu-tiny ({COMBINED}): model digits-text" in out
    assert f"\n{COMBINED}: b1, b2 in [1, 1.6]" in out
    assert "skip_freeu: [linear: rho_top=1 rho_bottom=1] [freeu: off]" in out  # rich printed the brackets as text
    assert optuna.load_study(study_name="demo-freeu-tiny", storage=url).user_attrs["method"] == COMBINED
    best = cli("best", "demo-freeu-tiny", "--storage", url)
    assert best.returncode == 0 and best.stdout.startswith(f"study demo-freeu-tiny ({COMBINED}): trial "), best.stdout
    assert api.best(url, "demo-freeu-tiny").to_json()["method"] == COMBINED
    assert f"<th>method</th><td>{COMBINED}</td>" in page.replace("&#x27;", "'")


def test_the_one_over_n_figure_says_why_it_has_no_fid_infinity_line(combined):
    from skipsearch.dashboards.figures import fid_vs_inverse_n

    url, _, page = combined
    d = gather(url, "demo-freeu-tiny")
    fig = fid_vs_inverse_n(d)
    notes = [a.text for a in fig.layout.annotations]
    assert len(notes) == 1 and "No FID-inf line" in notes[0] and "one N only" in notes[0] and "N=64" in notes[0]
    assert not [t for t in fig.data if t.mode == "lines"]  # no line drawn through a single N
    low, high = fig.layout.xaxis.range
    assert low == 0 and high > 1 / 64
    assert "No FID-inf line" in page


def test_a_ddim_export_lists_only_what_ddim_reads_and_verifies(combined, tmp_path):
    url, _, _ = combined
    out = api.export(url, "demo-freeu-tiny", tmp_path / "best.yaml")
    written = yaml.safe_load(out.read_text())["provenance"]["sampler"]
    assert written["name"] == "ddim" and written["steps"] == 3 and not KARRAS & set(written)
    assert not KARRAS & set(api.best(url, "demo-freeu-tiny").to_json()["sampler"])
    assert api.verify(out).ok
    # a file written before: the EDM fields listed too (even odd values: DDIM never reads them)
    old = yaml.safe_load(out.read_text())
    old["provenance"]["sampler"] |= {"sigma_min": 0.01, "sigma_max": 20.0, "rho": 3.0}
    older = tmp_path / "older.yaml"
    older.write_text(yaml.safe_dump(old))
    assert coeffile.read(older).provenance.sampler.sigma_max == 20.0
    assert api.verify(older).ok


def test_an_edm_study_keeps_its_sigma_range(tmp_path):
    url = f"sqlite:///{tmp_path / 'heun.db'}"
    raw = tiny_spec_dict("heun-range", sampler={"name": "heun", "steps": 3, "sigma_max": 40.0},
                         search={"trials": 2}, confirm={"top_k": 0})
    api.run(parse_spec(raw), storage=url, echo=lambda line: None)
    out = api.export(url, "heun-range", tmp_path / "best.yaml")
    written = yaml.safe_load(out.read_text())["provenance"]["sampler"]
    assert written["name"] == "heun" and written["sigma_max"] == 40.0 and KARRAS <= set(written)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "euler_discrete", "heun", "euler"])
def test_the_listed_settings_rebuild_the_same_sampler(name):
    """What provenance lists of a sampler, read back with the rest at their defaults, samples the same: the EDM
    fields are listed for EDM's samplers and dropped (never read) for diffusers' schedulers."""
    spec = SamplerSpec(name=name, steps=4, sigma_min=0.01, sigma_max=20.0, rho=3.0, guidance_scale=2.0)
    listed = spec.used()
    edm = name in ("heun", "euler")
    assert KARRAS <= set(listed) if edm else not KARRAS & set(listed)
    assert SamplerSpec(**listed).config() == spec.config()
    assert listed["guidance_scale"] == 2.0 and listed["steps"] == 4
