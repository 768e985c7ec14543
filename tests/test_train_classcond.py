"""``python -m skipsearch.training.diffusers_digits --classes``: a class-conditional DDPM folder that skipsearch's
diffusers family loads from ``model: {family: diffusers, path: ...}`` and samples every digit of.

The folder is the script's own, written by the command a user runs (a few training steps, in a fresh interpreter):
the check is that what the script saves is what skipsearch reads, not a folder built by the test. Labels are read
where they enter the network (the UNet's class embedding), not from what ``sample`` says it did. The unconditional
default is held to the shipped model's config (its weights came from that config; the script's random draws are
unchanged by the option, checked when the option was added).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from class_labels import labels_seen
from conftest import tiny_spec_dict

pytest.importorskip("diffusers")

CLASSES = 10
SHIPPED = Path(__file__).resolve().parents[1] / "studies/models/digits-ddpm"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The script's folder after 2 training steps, class-conditional."""
    out = tmp_path_factory.mktemp("classcond") / "model"
    done = subprocess.run([sys.executable, "-m", "skipsearch.training.diffusers_digits", "--classes", "--steps", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "class-conditional (10 labels)" in (out / "train_log.txt").read_text()
    return out


def test_the_folder_is_a_class_conditional_pipeline(folder):
    index = json.loads((folder / "model_index.json").read_text())
    config = json.loads((folder / "unet" / "config.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"] and config["num_class_embeds"] == CLASSES
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_skipsearch_loads_it_and_samples_each_class(folder, tmp_path):
    """The spec's ``model: {family: diffusers, path}`` loads the folder with ten conditions; ``sample`` (the
    trials' own sampling) gives seed s the label s mod 10, and the label changes the image."""
    from skipsearch.diffusion.generation import SamplerConfig, generate
    from skipsearch.exchange.sample import sample
    from skipsearch.models import load_model
    from skipsearch.models.diffusers_unet import DiffusersModel

    loaded = load_model(DiffusersModel(path=str(folder)))
    assert loaded.info.conditions == tuple(range(CLASSES)) and loaded.info.shape == (1, 16, 16)
    assert loaded.info.skips and loaded.info.resolution == 16

    spec = tmp_path / "cond.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict("cond", model={"family": "diffusers", "path": str(folder)},
                                                  sampler={"name": "ddim", "steps": 2})))
    with labels_seen(CLASSES) as seen:
        r = sample(spec, n=CLASSES, seed_start=0, output=tmp_path / "each", progress=False)
    assert seen == [list(range(CLASSES))] * 2  # one batch, 2 DDIM steps: every digit once
    assert r.images.shape == (CLASSES, 1, 16, 16) and r.labels == tuple(range(CLASSES))

    # one seed's noise under each label: the class embedding reaches the image
    same_noise = generate(loaded.denoiser, [7] * CLASSES, loaded.info.shape, SamplerConfig("ddim", 2),
                          labels=list(range(CLASSES)))
    assert len({tuple(img.flatten().tolist()) for img in same_noise}) == CLASSES


def test_the_unconditional_default_is_the_shipped_config():
    """Without ``--classes`` the UNet is built from the shipped model's config, with no class embedding."""
    from skipsearch.training.diffusers_digits import build_unet

    shipped = json.loads((SHIPPED / "unet" / "config.json").read_text())
    built = {k: v for k, v in build_unet().config.items() if not k.startswith("_")}
    assert built["num_class_embeds"] is None
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in built.items()} == \
        {k: v for k, v in shipped.items() if not k.startswith("_")}
    assert build_unet(CLASSES).config.num_class_embeds == CLASSES
