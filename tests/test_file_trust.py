"""A coefficient file is data: it never gives trust, and it must agree with itself.

- Trust to load a pickle is the user's (``skipsearch verify --trust-pickles``, ``verify(..., trust_pickles=True)``);
  a file whose ``provenance.model`` says ``trust_pickles: true`` names a pickle that must never be opened
  (a marker file proves it: unpickling the planted file creates it).
- ``verify`` exits 1, without sampling, where the file's coefficients disagree with what its provenance records of
  them (the rho listed per skip; the recipe its Diff-Tuning weights were trained with), and ``apply`` refuses the
  file-only disagreements alike.
- A value missing from a file's coefficients is refused by ``apply`` and ``verify`` the same way, naming it.

The files are written here by hand (no study is run), so the whole file takes seconds plus a few CLI runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
from hostile import VALID_PROVENANCE
from test_spec import cli

import skipsearch
from skipsearch.errors import UserError
from skipsearch.exchange import coeffile
from skipsearch.exchange.provenance import ModelRef
from skipsearch.exchange.verify import check
from skipsearch.files import file_hash
from skipsearch.methods import method_of
from skipsearch.models import load_model, model_info

FORMAT = "skipsearch-coefficients/1"


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: the proof that a file ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write(path: Path, kind: str, coefficients: dict, provenance: dict) -> Path:
    path.write_text(json.dumps({"format": FORMAT, "kind": kind, "coefficients": coefficients,
                                "provenance": provenance}))
    return path


def linear_file(path: Path, rho_top: float = 1.01, rho_bottom: float = 0.9, **provenance) -> Path:
    """A Skip-Tuning file for the embedded model whose ``provenance.skips`` list exactly what its coefficients
    give each of the model's skips (as export writes them)."""
    skips = model_info("embedded-digits").skips
    k = len(skips) - 1
    listed = [{"index": s.index, "level": s.level, "path": s.path, "rho": rho_top + (i / k) * (rho_bottom - rho_top)}
              for i, s in enumerate(skips)]
    return write(path, "skip_tuning", {"family": "linear", "rho_top": rho_top, "rho_bottom": rho_bottom},
                 VALID_PROVENANCE | {"skips": listed} | provenance)


# --- trust: the user's, never the file's -----------------------------------------------------------------

def _edm_section(tmp_path: Path, marker: Path) -> dict:
    """An NVlabs EDM model section naming a planted pickle, with trust_pickles set by the file."""
    (tmp_path / "code" / "dnnlib").mkdir(parents=True)
    (tmp_path / "code" / "torch_utils").mkdir()
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"ema": Payload(marker)}))
    return {"family": "edm", "path": str(evil), "code": str(tmp_path / "code"), "trust_pickles": True}


def _diffusers_section(tmp_path: Path, marker: Path) -> dict:
    """A diffusers UNet folder whose only weights are a planted pickled ``.bin``, with trust_pickles set by the
    file."""
    from diffusers import UNet2DModel

    folder = tmp_path / "unet"
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=4).save_config(folder)
    torch.save({"conv_in.weight": Payload(marker)}, folder / "diffusion_pytorch_model.bin")
    return {"family": "diffusers", "path": str(folder), "trust_pickles": True}


@pytest.mark.parametrize("family", ["edm", "diffusers"])
def test_a_files_trust_pickles_never_opens_the_pickle_it_names(tmp_path, family):
    """``verify`` (CLI and Python), ``check`` and ``apply`` of a file whose provenance turns trust on for a
    planted pickle: one message saying how the user gives trust, exit 2, and the pickle is never unpickled."""
    marker = tmp_path / "PWNED"
    section = (_edm_section if family == "edm" else _diffusers_section)(tmp_path, marker)
    model = {"id": "evil", "hash": "0123456789abcdef", "spec": section}
    path = linear_file(tmp_path / "evil.json", model=model)
    assert coeffile.read(path).provenance.model.spec.trust_pickles  # the file does say it
    if family == "edm":  # the CLI once (a subprocess costs seconds); its message is the Python one
        proc = cli("verify", str(path))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "a coefficient file never gives trust" in proc.stderr and "--trust-pickles" in proc.stderr
        check_refuses = pytest.raises(UserError, match="never gives trust")
    else:  # check() opens nothing of a diffusers folder: its weights are refused when the model is read
        check_refuses = contextlib.nullcontext()
    with pytest.raises(UserError, match=r"never gives trust \(its provenance.model.trust_pickles says the study"):
        skipsearch.verify(path)
    with check_refuses:
        check(path)
    with skipsearch.apply(load_model("embedded-digits").denoiser, path):  # apply never loads the file's model
        pass
    assert not marker.exists(), "a coefficient file's trust_pickles ran its pickle"


def test_the_users_own_trust_pickles_is_honoured(tmp_path):
    """``--trust-pickles`` on the user's command line reaches the family: the pickle is opened (its marker
    appears, here on purpose) and refused as not an NVlabs network, exit 2. The CLI runs in this process
    (typer's runner): the subprocess runs above cover how it exits."""
    from typer.testing import CliRunner

    from skipsearch.cli import app

    marker = tmp_path / "OPENED"
    section = _edm_section(tmp_path, marker)
    path = linear_file(tmp_path / "trusted.json", model={"id": "evil", "hash": "0123456789abcdef", "spec": section})
    result = CliRunner().invoke(app, ["verify", str(path), "--trust-pickles"])
    assert result.exit_code == 2 and "'ema' is a NoneType" in result.output, result.output
    assert marker.exists()


def test_model_ref_switches_every_trust_flag_off_unless_the_user_gives_it(tmp_path):
    ref = ModelRef.model_validate({"id": "m", "hash": "0123456789abcdef",
                                   "spec": {"family": "diffusers", "path": str(tmp_path), "trust_pickles": True}})
    assert ref.asks_trust and ref.section().trust_pickles is False
    assert ref.section(trust_pickles=True).trust_pickles is True
    handed = ModelRef.model_validate({"id": "m", "hash": "0123456789abcdef",
                                      "spec": {"family": "diffusers", "name": "mine"}})
    assert handed.section(trust_pickles=True).trust_pickles is False  # nothing on disk to trust


# --- self-consistency ---------------------------------------------------------------------------------------

def test_skips_rho_that_the_coefficients_do_not_give_exits_1(tmp_path):
    """A listed rho edited to 1.4 where the coefficients give ~1.0: exit 1 naming the skip, nothing sampled.
    The untouched file agrees with itself on the model's actual skip points."""
    good = linear_file(tmp_path / "good.json")
    cf = coeffile.read(good)
    skips = model_info("embedded-digits").skips
    assert method_of(cf.coefficients).disagreements(cf.coefficients, cf.provenance, skips) == []
    doc = json.loads(good.read_text())
    doc["provenance"]["skips"][1]["rho"] = 1.4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    proc = cli("verify", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "provenance.skips[1].rho: 1.4, but the coefficients give" in proc.stderr
    assert "nothing was sampled" in proc.stderr and "reproduced" not in proc.stdout
    doc["provenance"]["skips"] = doc["provenance"]["skips"][:-1]
    bad.write_text(json.dumps(doc))
    result = skipsearch.verify(bad)
    assert not result.ok and result.reproduced_fid is None
    assert result.disagreements == (f"provenance.skips: lists {len(skips) - 1} skip points, the model has "
                                    f"{len(skips)}",)


@pytest.fixture
def dt_file(tmp_path):
    """(path, model): a Diff-Tuning file naming real fine-tuned weights (the pre-trained ones, scaled) and the
    recipe they were trained with, and a fresh pre-trained model to apply it to."""
    model = load_model("digits-0to4").denoiser
    weights = tmp_path / "trial-0000.pt"
    torch.save({k: v * 1.01 if v.is_floating_point() else v for k, v in model.net.state_dict().items()}, weights)
    recipe = {"s": 1.5, "s_prime": 0.5, "r": 0.25, "lam": 0.3, "lr": 1e-3, "steps": 6}
    provenance = copy.deepcopy(VALID_PROVENANCE) | {
        "weights": {"path": str(weights), "sha256_16": file_hash(weights), "recipe": recipe}}
    path = write(tmp_path / "dt.json", "diff_tuning", {"family": "diff_tuning", **recipe}, provenance)
    return path, model


def test_an_edited_difftuning_steps_exits_1_and_apply_refuses_it(dt_file):
    path, model = dt_file
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    with skipsearch.apply(model, path):  # the file as written agrees with itself: its weights go on
        assert any(not torch.equal(v, before[k]) for k, v in model.net.state_dict().items())
    doc = json.loads(path.read_text())
    doc["coefficients"]["steps"] = 60
    path.write_text(json.dumps(doc))
    result = skipsearch.verify(path)
    assert not result.ok and result.reproduced_fid is None
    assert result.disagreements == ("coefficients.steps: 60, but the weights were trained with steps = 6 "
                                    "(provenance.weights.recipe.steps)",)
    with pytest.raises(UserError, match=r"disagrees with itself\n  coefficients\.steps: 60"):
        skipsearch.apply(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.net.state_dict().items())  # nothing was changed


# --- a missing value: the same refusal in apply and verify -----------------------------------------------------

@pytest.mark.parametrize("drop, field", [
    (("rho_top",), "coefficients.rho_top"),
    (("skip", "rho_bottom"), "coefficients.skip.rho_bottom"),
    (("steps",), "coefficients.steps"),
], ids=["linear", "skip_freeu", "diff_tuning"])
def test_a_missing_coefficient_is_refused_alike_by_apply_and_verify(tmp_path, drop, field):
    coefficients = {
        "coefficients.rho_top": {"family": "linear", "rho_top": 1.2, "rho_bottom": 0.9},
        "coefficients.skip.rho_bottom": {"family": "skip_freeu",
                                         "skip": {"family": "linear", "rho_top": 1.2, "rho_bottom": 0.9},
                                         "freeu": {"family": "freeu", "b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.8}},
        "coefficients.steps": {"family": "diff_tuning", "s": 1.0, "s_prime": 1.0, "r": 0.2, "lam": 0.1, "lr": 1e-3,
                               "steps": 6},
    }[field]
    node = coefficients
    for key in drop[:-1]:
        node = node[key]
    del node[drop[-1]]
    kind = {"linear": "skip_tuning", "skip_freeu": "freeu", "diff_tuning": "diff_tuning"}[coefficients["family"]]
    path = write(tmp_path / "missing.json", kind, coefficients, VALID_PROVENANCE)
    expected = f"{path}: invalid coefficient file\n  {field}: missing"
    with pytest.raises(UserError) as applying:
        skipsearch.apply(load_model("embedded-digits").denoiser, path)
    with pytest.raises(UserError) as verifying:
        skipsearch.verify(path)
    assert str(applying.value) == str(verifying.value) and str(applying.value).startswith(expected)
