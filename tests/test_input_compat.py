"""Inputs that cannot give a meaningful FID are refused before anything is stored (issue 26, item 5).

A newcomer's grey digit extractor once averaged RGB samples, and even 4-channel latents, against an RGB
reference, with no word. Now the model's samples (after decoding), the extractor's input and the reference's
images are compared in ``resolve``: each refusal names its field and both channel counts, and the cases that do
mean something (grey against grey saved as RGB, Inception on grey, a latent pipeline whose VAE decodes) pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_dt_spec_dict, tiny_spec_dict

import skipsearch
from skipsearch import data
from skipsearch.errors import UserError
from skipsearch.metrics.compat import Images, Samples, problems
from skipsearch.resolve import resolve
from skipsearch.specfile import parse_spec

DIGITS = data.load("digits", resolution=16)[:64].numpy()  # 64 distinct grey digits, (N, 1, 16, 16)


def _npz(path: Path, images: np.ndarray) -> str:
    np.savez(path, images=images)
    return f"npz:{path}"


def _colour(images: np.ndarray) -> np.ndarray:
    """The grey digits tinted: red channel as is, green and blue darker, so the channels differ."""
    return np.concatenate([images, images // 2, images // 3], axis=1)


def _ddpm_folder(path: Path, channels: int, size: int) -> Path:
    """A tiny random diffusers DDPM pipeline folder sampling ``channels`` x ``size`` x ``size`` tensors."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(path, safe_serialization=True)
    return path


def _refusal(spec: dict) -> str:
    with pytest.raises(UserError) as err:
        resolve(parse_spec(spec))
    return str(err.value)


def test_grey_model_against_an_rgb_reference_is_refused_naming_both_channel_counts(tmp_path):
    ref = _npz(tmp_path / "rgb.npz", _colour(DIGITS))
    text = _refusal(tiny_spec_dict("rgb-ref", metric={"reference": ref}))
    assert "  metric.reference: the model samples 1-channel images, the reference holds 3-channel images" in text


def test_grey_saved_as_rgb_is_grey_and_passes(tmp_path):
    ref = _npz(tmp_path / "grey3.npz", np.repeat(DIGITS, 3, axis=1))
    resolved = resolve(parse_spec(tiny_spec_dict("grey3", metric={"reference": ref})))
    assert resolved.reference_size == 64 and not [w for w in resolved.warnings if "channel" in w]


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> Path:
    return _ddpm_folder(tmp_path_factory.mktemp("rgb") / "rgb", channels=3, size=16)


def test_rgb_model_with_the_grey_digit_extractor_is_refused_naming_the_extractor(tmp_path, rgb_model):
    ref = _npz(tmp_path / "rgb.npz", _colour(DIGITS))
    spec = tiny_spec_dict("rgb-digits", model={"family": "diffusers", "path": str(rgb_model)},
                          sampler={"name": "ddim"}, metric={"reference": ref})
    text = _refusal(spec)
    assert "  metric.extractor: skipsearch-digits reads grey 16x16 digits" in text
    assert "the model samples 3-channel images; use inception-v3-compat" in text
    assert "metric.reference" not in text  # the RGB reference matches the RGB samples


def test_rgb_model_against_the_grey_digits_says_both_fields_at_once(rgb_model):
    text = _refusal(tiny_spec_dict("rgb-vs-grey", model={"family": "diffusers", "path": str(rgb_model)},
                                   sampler={"name": "ddim"}))
    assert "  metric.extractor: skipsearch-digits reads" in text
    assert "  metric.reference: the model samples 3-channel images, the reference holds 1-channel grey images" in text


def test_undecoded_latents_are_refused_naming_the_model(tmp_path):
    """A UNet alone, sampling 4-channel latents with no VAE to decode them, is not scored as if they were images."""
    folder = _ddpm_folder(tmp_path / "latents", channels=4, size=16)
    text = _refusal(tiny_spec_dict("latents", model={"family": "diffusers", "path": str(folder)},
                                   sampler={"name": "ddim"}))
    assert "  model: the model samples 4-channel tensors (latents of a latent model's UNet alone?" in text
    assert "vae/" in text


def test_a_latent_pipeline_whose_vae_decodes_to_grey_passes(tmp_path):
    import families

    folder = families.latent_text_folder(tmp_path / "sd")
    spec = tiny_spec_dict("sd", model={"family": "diffusers", "path": str(folder),
                                       "prompts": str(folder / "prompts.txt")}, sampler={"name": "ddim"})
    resolved = resolve(parse_spec(spec))
    assert resolved.info.noise_shape == (2, 8, 8) and resolved.info.img_channels == 1
    assert not [w for w in resolved.warnings if "channel" in w or "resized" in w]


def test_digit_extractor_on_another_size_is_a_warning(tmp_path):
    folder = _ddpm_folder(tmp_path / "big", channels=1, size=32)
    resolved = resolve(parse_spec(tiny_spec_dict("big", model={"family": "diffusers", "path": str(folder)},
                                                 sampler={"name": "ddim"})))
    said = [w for w in resolved.warnings if "resized" in w]
    assert said == ["metric.extractor: skipsearch-digits takes 16x16 images; the 32x32 samples and reference images "
                    "are resized to it (bilinear), so these FIDs compare only with FIDs of 32x32 images"]


def test_inception_takes_rgb_and_replicated_grey_but_not_latents():
    """Inception's own rules, from facts (its weights are not needed to judge them)."""
    grey, rgb = Images(channels=1, resolution=32, grey=True), Images(channels=3, resolution=32, grey=False)
    assert problems(Samples(channels=1, resolution=32), grey, "inception-v3-compat") == []
    assert problems(Samples(channels=3, resolution=32), rgb, "inception-v3-compat@bf16") == []
    assert [p.field for p in problems(Samples(channels=1, resolution=32), rgb, "inception-v3-compat")] == \
        ["metric.reference"]
    assert [p.field for p in problems(Samples(channels=4, resolution=32), rgb, "inception-v3-compat")] == ["model"]


def test_images_facts_tell_grey_from_colour():
    grey = torch.from_numpy(np.repeat(DIGITS, 3, axis=1))
    assert Images.of(grey).grey and not Images.of(torch.from_numpy(_colour(DIGITS))).grey
    assert Images.of(torch.from_numpy(DIGITS)) == Images(channels=1, resolution=16, grey=True)


def test_diff_tuning_data_and_source_reference_of_another_kind_are_refused(tmp_path):
    rgb = _npz(tmp_path / "rgb.npz", _colour(DIGITS))
    spec = tiny_dt_spec_dict("dt-rgb", weights_dir=str(tmp_path / "w"), finetune={"data": rgb})
    assert "  finetune.data: the model samples 1-channel images, the data set holds 3-channel images" in \
        _refusal(spec)
    spec = tiny_dt_spec_dict("dt-rgb-src", weights_dir=str(tmp_path / "w"), finetune={"source_reference": rgb})
    assert "  finetune.source_reference: the model samples 1-channel images, the reference holds 3-channel" in \
        _refusal(spec)


def test_a_refused_study_stores_nothing(tmp_path):
    ref = _npz(tmp_path / "rgb.npz", _colour(DIGITS))
    db = tmp_path / "s.db"
    with pytest.raises(UserError, match="metric.reference: the model samples 1-channel images"):
        skipsearch.run(parse_spec(tiny_spec_dict("rgb-run", metric={"reference": ref})), storage=f"sqlite:///{db}")
    assert not db.exists()  # no database, so no study name taken
