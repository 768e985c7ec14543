"""The shipped embedded model: safe loading, and recognisable digits at ~20 NFE."""

from __future__ import annotations

from importlib import resources

import torch

from skipsearch import data
from skipsearch.metrics.digits import load_classifier, to_classifier_input
from skipsearch.diffusion.generation import SamplerConfig, chunk_noise, generate, latents
from skipsearch.models.embedded_family import SHIPPED


def test_weights_load_with_weights_only():
    path = resources.files("skipsearch.weights") / SHIPPED["embedded-digits"].weights
    with resources.as_file(path) as p:
        state = torch.load(p, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert p.stat().st_size < 5_000_000


def test_samples_are_recognisable_digits(digits_model):
    """At Heun 10 steps (19 NFE) the shipped classifier is confident on most samples, across most classes."""
    images = generate(digits_model.denoiser, range(300), (1, 16, 16), SamplerConfig("heun", 10))
    with torch.no_grad():
        probs = load_classifier()(to_classifier_input(images)).softmax(1)
    confident = probs.max(1).values > 0.9
    assert confident.float().mean() > 0.8
    assert len(probs.argmax(1)[confident].unique()) == 10
    real = data.digits(16)
    assert abs(images.float().mean() - real.float().mean()) < 10  # brightness like the data


def test_remembered_noise_is_the_seeds_noise_and_cannot_be_changed_by_a_caller():
    first = chunk_noise(range(3, 9), (1, 16, 16))
    assert torch.equal(first, latents(range(3, 9), (1, 16, 16)))
    first.mul_(0)  # a caller writing into its noise
    assert torch.equal(chunk_noise(range(3, 9), (1, 16, 16)), latents(range(3, 9), (1, 16, 16)))


def test_noise_depends_on_seed_only_not_on_batching(digits_model):
    assert torch.equal(latents([5, 6, 7], (1, 16, 16))[1], latents([6], (1, 16, 16))[0])
    sampler = SamplerConfig("euler", 4)
    whole = generate(digits_model.denoiser, range(20), (1, 16, 16), sampler, batch_size=20)
    split = generate(digits_model.denoiser, range(20), (1, 16, 16), sampler, batch_size=7)
    # different batch shapes may round differently in the last bit, never by more than one grey level
    assert (whole.int() - split.int()).abs().max() <= 1
    assert (whole == split).float().mean() > 0.99


def test_fashion_model_loads_safely_and_its_skips_are_found():
    from skipsearch import apply
    from skipsearch.models import load_model
    from skipsearch.methods.skip_tuning.schedules import LinearSkip

    loaded = load_model("fashion-mnist-unet")
    assert loaded.info.resolution == 32 and loaded.info.n_skips == 3 and loaded.info.reference == "fashion-mnist"
    x, sigma = torch.randn(2, 1, 32, 32), torch.tensor([0.5, 5.0])
    plain = loaded.denoiser(x, sigma)
    assert torch.isfinite(plain).all()
    with apply(loaded.denoiser, LinearSkip()):
        assert torch.equal(loaded.denoiser(x, sigma), plain)
