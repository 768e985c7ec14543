"""A study never mixes models or references (issue 25, findings 2 and 10a).

The content hashes of the model's weights and of the reference a study was stored with are recorded with it and
compared at every later run before any trial: a changed file is one message (exit 2) naming the field, the
stored hash and the new one, and nothing new is recorded. A trial scored with other files (a process or worker
that loaded the file before it changed) is stopped before it is recorded. A study stored by an older skipsearch
gets its hashes from its trials, unless they already mix. A diffusers folder whose only safetensors file is one
diffusers would not load is refused before anything is stored.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import families
import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_spec_dict
from typer.testing import CliRunner

from skipsearch import api, data
from skipsearch.cli import app
from skipsearch.errors import UserError
from skipsearch.search.driver import open_study
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store

pytest.importorskip("diffusers")

OLD = Path(__file__).parent / "data" / "main-7079771.db"
QUICK = {"confirm": {"top_k": 0, "n": 16, "seed_sets": 1}, "metric": {"n": 16, "batch_size": 16,
                                                                      "kid_subset_size": 8}}


def _spec_file(tmp_path: Path, name: str, **overrides) -> Path:
    spec = tiny_spec_dict(name, storage=f"sqlite:///{tmp_path / 'studies.db'}", **QUICK)
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(path: Path, *args: str):
    return CliRunner().invoke(app, ["run", str(path), *args])


def _rows(tmp_path: Path, study: str) -> tuple[int, int]:
    """(skipsearch trial rows, Optuna trials) of a study."""
    with sqlite3.connect(tmp_path / "studies.db") as db:
        ours = db.execute("SELECT COUNT(*) FROM skipsearch_trials WHERE study_name = ?", (study,)).fetchone()[0]
        optuna_trials = db.execute("SELECT COUNT(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ?",
                                   (study,)).fetchone()[0]
    return ours, optuna_trials


def _scale_one_tensor(weights: Path, factor: float = 1.05) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * factor
    save_file(tensors, weights)


def test_a_changed_model_file_stops_the_next_run_and_a_trial_scored_with_it(tmp_path):
    folder = families.ddpm_folder(tmp_path / "ddpm")
    model = {"family": "diffusers", "path": str(folder)}
    spec = _spec_file(tmp_path, "changed-model", model=model, sampler={"name": "ddim", "steps": 2},
                      search={"trials": 1})
    api.run(spec, echo=lambda line: None)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    before = Store(url).study_hashes("changed-model")
    assert set(before) == {"model", "metric.reference"}
    assert _rows(tmp_path, "changed-model") == (1, 1)

    _scale_one_tensor(folder / "unet" / "diffusion_pytorch_model.safetensors")
    result = _run(spec, "--trials", "2")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "error: study 'changed-model' was stored with other files" in text, text
    assert f"model ddpm (weights under {folder}): stored {before['model']}, now " in text, text
    assert "Restore the original file(s), or use a new study name" in text, text
    assert _rows(tmp_path, "changed-model") == (1, 1)  # nothing new recorded

    # A new study on the changed file, in the process that still holds the old weights loaded: its first trial
    # is scored with them, and stopped before it is recorded.
    other = _spec_file(tmp_path, "after-change", model=model, sampler={"name": "ddim", "steps": 2},
                       search={"trials": 1})
    with pytest.raises(UserError, match="trial 0 was computed with other files") as err:
        api.run(other, echo=lambda line: None)
    now = Store(url).study_hashes("after-change")["model"]
    assert now != before["model"] and f"stored {now}, this trial 0 used {before['model']}" in str(err.value)
    frame = api.trials(url, "after-change")
    assert list(frame.state) == ["FAIL"] and frame.fid.isna().all() and not frame.evaluated.iloc[0]


def test_a_replaced_npz_reference_stops_the_next_run(tmp_path):
    images = data.load("digits")
    np.savez(tmp_path / "ref.npz", images=images[:200].numpy())
    spec = _spec_file(tmp_path, "changed-ref", metric={"reference": f"npz:{tmp_path / 'ref.npz'}"},
                      search={"trials": 1})
    assert _run(spec).exit_code == 0
    stored = Store(f"sqlite:///{tmp_path / 'studies.db'}").study_hashes("changed-ref")["metric.reference"]

    np.savez(tmp_path / "ref.npz", images=images[200:400].numpy())  # other images behind the same path
    result = _run(spec, "--trials", "2")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"metric.reference npz:{tmp_path / 'ref.npz'} (its images, or the weights of extractor " \
           f"skipsearch-digits): stored {stored}, now " in text, text
    assert _rows(tmp_path, "changed-ref") == (1, 1)


def test_junk_safetensors_beside_a_pickle_is_refused_before_the_study_is_stored(tmp_path):
    from safetensors.torch import load_file

    folder = families.ddpm_folder(tmp_path / "ddpm")
    unet = folder / "unet"
    state = load_file(unet / "diffusion_pytorch_model.safetensors")
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(state, unet / "diffusion_pytorch_model.bin")
    (unet / "junk.safetensors").write_bytes(b"not a safetensors file")
    spec = _spec_file(tmp_path, "junk", model={"family": "diffusers", "path": str(folder)},
                      sampler={"name": "ddim", "steps": 2}, search={"trials": 1})
    result = _run(spec)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{unet / 'junk.safetensors'}: the UNet's weights load only from diffusion_pytorch_model.safetensors" \
           in text and "diffusion_pytorch_model.bin beside it is a pickle" in text, text
    assert not (tmp_path / "studies.db").exists()  # refused before anything was stored


def _old_study(tmp_path: Path, mix: bool):
    path = tmp_path / "old.db"
    shutil.copy(OLD, path)
    if mix:  # an older skipsearch let a changed model file into the study
        with sqlite3.connect(path) as db:
            db.execute("UPDATE skipsearch_trials SET model_hash = '0123456789abcdef' "
                       "WHERE study_name = 'old-skip' AND trial_number = 2")
    spec = parse_spec(tiny_spec_dict("old-skip", metric={"n": 128, "rungs": [64], "batch_size": 64},
                                     search={"trials": 4}, confirm={"top_k": 0}))
    return f"sqlite:///{path}", spec


def test_an_old_study_gets_its_hashes_from_its_trials_unless_they_mix(tmp_path):
    (tmp_path / "agree").mkdir()
    url, spec = _old_study(tmp_path / "agree", mix=False)
    ctx = open_study(spec, url, echo=lambda line: None)
    ctx.close()
    assert Store(url).study_hashes("old-skip") == {"model": "5fe7b9f17c1d46c5", "metric.reference": "e76686912dcbd26b"}

    (tmp_path / "mixed").mkdir()
    url, spec = _old_study(tmp_path / "mixed", mix=True)
    with pytest.raises(UserError, match=r"already mixes 2 different hashes of model embedded-digits.* "
                                        r"\(0123456789abcdef, 5fe7b9f17c1d46c5\)"):
        open_study(spec, url, echo=lambda line: None)
    assert Store(url).study_hashes("old-skip") == {}


def test_a_change_in_any_shard_of_a_sharded_model_changes_its_hash(tmp_path):
    from skipsearch.models import model_info

    folder = families.ddpm_folder(tmp_path / "ddpm")
    unet = folder / "unet"
    from diffusers import UNet2DModel

    UNet2DModel.from_pretrained(unet).save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    for path in (tmp_path / "sharded").iterdir():
        shutil.copy(path, unet / path.name)
    shards = sorted(unet.glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) >= 2  # really sharded
    spec = parse_spec(tiny_spec_dict("sharded", model={"family": "diffusers", "path": str(folder)},
                                     sampler={"name": "ddim", "steps": 2})).model
    before = model_info(spec).weights_hash
    _scale_one_tensor(shards[-1])  # the last shard, which the first shard's hash alone would never see
    assert model_info(spec).weights_hash != before

