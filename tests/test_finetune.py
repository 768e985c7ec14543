"""Diff-Tuning's training loop: the right noise levels reach the right half of the batch, the bank is used
exactly when r > 0, and the loss is mean(L_down) + lambda mean(L_bank)."""

from __future__ import annotations

import copy

import pytest
import torch

from skipsearch import data
from skipsearch.methods.diff_tuning.noise import diff_tuning_loss, quantile_to_sigma
from skipsearch.methods.diff_tuning.training import finetune
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights
from skipsearch.methods.diff_tuning.finetune_trial import downstream, downstream_images
from skipsearch.errors import DivergedError

SIGMAS = (0.002, 80.0)


@pytest.fixture(scope="module")
def source_model():
    from skipsearch.models import load_model

    return load_model("digits-0to4")


@pytest.fixture(scope="module")
def new_images():
    return data.to_model_range(downstream_images("digits-5to9", 40, 0, 16))


def _sigma_quantile(sigma: torch.Tensor) -> torch.Tensor:
    lo, hi = (torch.log(torch.tensor(s, dtype=torch.float64)) for s in SIGMAS)
    return (sigma.double().log() - lo) / (hi - lo)


def test_each_part_of_the_batch_gets_its_own_noise_levels(source_model, new_images):
    """s = 3 puts the new data at high noise (E[u] = 0.8), s' = 3 the bank at low noise (E[u] = 0.2)."""
    model = copy.deepcopy(source_model.denoiser)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[1].detach().clone()))
    w = DiffTuningWeights(s=3.0, s_prime=3.0, r=0.25, lam=0.1, lr=1e-6, steps=20)
    bank = new_images.flip(-1)
    list(finetune(model, new_images, bank, w, batch_size=32, sigma_range=SIGMAS, seed=0))
    assert len(seen) == 20 and all(len(s) == 32 for s in seen)
    u = _sigma_quantile(torch.stack(seen))
    new_u, bank_u = u[:, :24].flatten(), u[:, 24:].flatten()
    assert new_u.mean().item() == pytest.approx(0.8, abs=0.03)
    assert bank_u.mean().item() == pytest.approx(0.2, abs=0.04)


def test_the_bank_is_used_exactly_when_r_is_positive(source_model, new_images):
    poisoned = torch.full_like(new_images, float("nan"))
    plain = DiffTuningWeights(s=0, s_prime=0, r=0.0, lam=1.0, lr=1e-4, steps=3)
    assert list(finetune(copy.deepcopy(source_model.denoiser), new_images, poisoned, plain, batch_size=16,
                         sigma_range=SIGMAS, seed=0)) == [3]
    mixed = plain.model_copy(update={"r": 0.25})
    with pytest.raises(DivergedError, match="loss is nan"):
        list(finetune(copy.deepcopy(source_model.denoiser), new_images, poisoned, mixed, batch_size=16,
                      sigma_range=SIGMAS, seed=0))


def test_loss_is_linear_in_lambda_with_the_bank_mean_as_slope(source_model, new_images):
    model, bank = source_model.denoiser, new_images.flip(-2)[:8]

    def loss(lam: float) -> float:
        w = DiffTuningWeights(s=1, s_prime=1, r=0.25, lam=lam)
        return diff_tuning_loss(model, new_images[:24], bank, w, SIGMAS, torch.Generator().manual_seed(3)).item()

    l0, l1, l2 = loss(0.0), loss(1.0), loss(2.0)
    assert l1 > l0  # the bank adds a positive term
    assert l2 - l0 == pytest.approx(2 * (l1 - l0), rel=1e-4)


def test_yields_at_eval_steps_and_the_end_in_eval_mode(source_model, new_images):
    model = copy.deepcopy(source_model.denoiser)
    w = DiffTuningWeights(s=1, s_prime=1, r=0.2, lam=0.1, lr=1e-4, steps=5)
    modes = [(step, model.training) for step in finetune(model, new_images, new_images, w, batch_size=10,
                                                         sigma_range=SIGMAS, seed=0, report_at=(2, 4, 9))]
    assert modes == [(2, False), (4, False), (5, False)]
    before = source_model.denoiser.net.conv_out.weight
    assert not torch.equal(model.net.conv_out.weight, before)  # the copy trained, the original did not


def test_quantile_mapping_spans_the_sampler_range():
    sig = quantile_to_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64), *SIGMAS)
    assert sig.tolist() == pytest.approx(list(SIGMAS))


def test_bank_fraction_rounds_to_whole_images_and_keeps_one_new_image():
    assert DiffTuningWeights(r=0.2).bank_count(64) == 13
    assert DiffTuningWeights(r=0.0).bank_count(64) == 0
    assert DiffTuningWeights(r=0.99).bank_count(4) == 3


def test_downstream_subset_is_seeded_and_checked():
    a, b = downstream_images("digits-5to9", 100, 0, 16), downstream_images("digits-5to9", 100, 0, 16)
    assert torch.equal(a, b) and len(a) == 100
    assert not torch.equal(a, downstream_images("digits-5to9", 100, 1, 16))
    from skipsearch.errors import UserError

    with pytest.raises(UserError, match="has only 896 images"):
        downstream_images("digits-5to9", 5000, 0, 16)


def test_conditional_model_trains_new_images_with_their_labels_and_the_bank_with_the_null_label(source_model):
    model = copy.deepcopy(source_model.denoiser)
    assert model.net.num_classes == 10 and source_model.info.classes == (0, 1, 2, 3, 4)
    images, labels = downstream("digits-5to9", 40, 0, 16)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[2].clone()))
    w = DiffTuningWeights(s=1, s_prime=1, r=0.25, lam=0.1, lr=1e-6, steps=4)
    list(finetune(model, data.to_model_range(images), data.to_model_range(images), w, batch_size=16,
                  sigma_range=SIGMAS, seed=0, new_labels=labels))
    for y in seen:
        assert set(y[:12].tolist()) <= {5, 6, 7, 8, 9} and (y[12:] == 10).all()


def test_unconditional_model_gets_no_labels(new_images):
    from skipsearch.models import load_model

    model = copy.deepcopy(load_model("embedded-digits").denoiser)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    w = DiffTuningWeights(s=1, s_prime=1, r=0.25, lam=0.1, lr=1e-6, steps=2)
    list(finetune(model, new_images, new_images, w, batch_size=8, sigma_range=SIGMAS, seed=0,
                  new_labels=torch.zeros(len(new_images), dtype=torch.long)))
    assert seen == [None, None] and model.net.num_classes == 0


def test_sampling_labels_follow_the_seed(source_model):
    from skipsearch.evaluate import EvalTask
    from skipsearch.diffusion.generation import SamplerConfig, generate

    task = EvalTask(model="digits-0to4", sampler=SamplerConfig("euler", 3), extractor="skipsearch-digits",
                    dataset="digits-5to9", n=8, seed_start=100, classes=(5, 6, 7, 8, 9))
    assert task.labels(range(100, 104)) == [5, 6, 7, 8]  # seed s draws classes[s % 5]
    shape = (1, 16, 16)
    as_five = generate(source_model.denoiser, [7, 8], shape, SamplerConfig("euler", 3), labels=[0, 0])
    as_null = generate(source_model.denoiser, [7, 8], shape, SamplerConfig("euler", 3))
    again = generate(source_model.denoiser, [7, 8], shape, SamplerConfig("euler", 3), labels=[0, 0])
    assert torch.equal(as_five, again) and not torch.equal(as_five, as_null)
