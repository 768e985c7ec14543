"""Samplers against the exact probability-flow ODE solution for Gaussian data (no network needed)."""

from __future__ import annotations

import math

import pytest
import torch

from skipsearch.diffusion.kinds import KARRAS, NAMES, SAMPLER_KINDS, names_that
from skipsearch.diffusion.samplers import SAMPLERS, nfe, sample_euler, sample_heun
from skipsearch.diffusion.karras import karras_sigmas

MU, S = 0.3, 0.5  # data ~ N(MU, S^2) per pixel


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for Gaussian data: the exact denoiser."""
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def exact_endpoint(x_start: torch.Tensor, sigma_start: float, sigma_end: float) -> torch.Tensor:
    """PF-ODE dx/dsigma = (x - D)/sigma solved in closed form: x - MU scales with sqrt(S^2 + sigma^2)."""
    return MU + (x_start - MU) * math.sqrt(S**2 + sigma_end**2) / math.sqrt(S**2 + sigma_start**2)


def _error(fn, steps: int) -> float:
    sigmas = karras_sigmas(steps, 0.002, 80.0, 7.0)
    x = torch.randn(4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80.0
    # Integrate to sigma_min only; the last step to 0 is the Euler jump both samplers share.
    out = fn(gaussian_denoiser, x, sigmas[:-1])
    return (out - exact_endpoint(x, 80.0, float(sigmas[-2]))).abs().max().item()


def test_karras_sigmas_match_edm_formula():
    s = karras_sigmas(5, 0.002, 80.0, 7.0)
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002) and s[-1].item() == 0.0
    i = 2
    expected = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert s[i].item() == pytest.approx(expected, rel=1e-12)
    assert torch.all(s[1:] < s[:-1])


@pytest.mark.parametrize("steps, bound", [(32, 0.05), (128, 3e-3)])
def test_heun_converges_to_exact_solution(steps, bound):
    assert _error(sample_heun, steps) < bound


def test_heun_is_second_order_and_euler_first_order():
    heun = [_error(sample_heun, n) for n in (16, 32, 64)]
    euler = [_error(sample_euler, n) for n in (16, 32, 64)]
    heun_rate = math.log2(heun[1] / heun[2])
    euler_rate = math.log2(euler[1] / euler[2])
    assert heun_rate > 1.6, heun
    assert 0.6 < euler_rate < 1.4, euler
    assert heun[2] < euler[2] / 5


@pytest.mark.parametrize("name", names_that("denoiser"))  # every ODE sampler of the table has its function
def test_nfe_counts_network_calls(name):
    calls = []

    def counting(x, sigma):
        calls.append(float(sigma))
        return gaussian_denoiser(x, sigma)

    SAMPLERS[name](counting, torch.randn(3, dtype=torch.float64), karras_sigmas(6))
    assert len(calls) == nfe(name, 6) == (11 if name == "heun" else 6)
    assert 0.0 not in calls  # the network is never asked at sigma = 0


def test_full_schedule_lands_on_the_denoised_mean():
    """With the trailing zero, the last Euler step returns D(x, sigma_min): samples match N(MU, S^2)."""
    x = torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 80.0
    out = sample_heun(gaussian_denoiser, x, karras_sigmas(200))
    assert out.mean().item() == pytest.approx(MU, abs=5e-3)
    assert out.std().item() == pytest.approx(S, rel=1e-2)


def test_remembered_noise_is_the_seeds_noise_within_its_byte_limit():
    """Each chunk's noise is remembered for the next trial: the same values as drawn afresh, handed out as copies,
    and the oldest chunks dropped once the memo passes its limit (its running count stays the true size)."""
    from skipsearch.diffusion.generation import _NoiseMemo, chunk_noise, latents

    first = chunk_noise(range(5), (1, 4, 4))
    assert torch.equal(first, latents(range(5), (1, 4, 4)))
    first.zero_()  # a caller writing into its copy changes nothing remembered
    assert torch.equal(chunk_noise(range(5), (1, 4, 4)), latents(range(5), (1, 4, 4)))
    chunk = latents(range(2), (1, 4, 4))
    size = chunk.numel() * chunk.element_size()
    memo = _NoiseMemo(2 * size)
    for k in range(4):
        memo.put((k,), latents(range(k, k + 2), (1, 4, 4)))
        memo.put((k,), chunk)  # a second put of a key (another thread first) is not counted twice
    assert memo.get((0,)) is None and memo.get((1,)) is None
    assert torch.equal(memo.get((3,)), latents(range(3, 5), (1, 4, 4)))
    assert memo.nbytes == 2 * size
    memo.put(("big",), latents(range(5), (1, 4, 4)))  # larger than the whole limit: not kept
    assert memo.get(("big",)) is None and memo.nbytes == 2 * size


@pytest.mark.parametrize("name", names_that("scheduler"))
def test_each_scheduler_of_the_table_builds_and_its_nfe_counts_network_calls(name):
    """A scheduler entry names a diffusers class that builds from a training-schedule config, and its NFE is the
    number of times sampling calls the network."""
    from skipsearch.models.diffusers_schedulers import sample_scheduler

    calls = []

    def output(x, t):
        calls.append(int(t))
        return torch.zeros_like(x)

    config = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
    sample_scheduler(output, torch.randn(2, 1, 4, 4), name, 7, config)
    assert len(calls) == nfe(name, 7) == SAMPLER_KINDS[name].nfe(7) == 7


def test_the_spec_takes_every_sampler_of_the_table_and_lists_only_what_each_reads():
    """The table is the only list of samplers: the spec accepts each of its names (and no other, naming the field),
    and provenance lists EDM's Karras fields only for the samplers that read them."""
    from skipsearch.errors import UserError
    from skipsearch.spec import SamplerSpec
    from skipsearch.specfile import parse_spec

    for name in NAMES:
        used = SamplerSpec(name=name, steps=4).used()
        assert set(KARRAS) <= set(used) if name in names_that("denoiser") else not set(KARRAS) & set(used)
        assert SamplerSpec.model_validate(used).config() == SamplerSpec(name=name, steps=4).config()
    with pytest.raises(UserError, match=r"sampler\.name"):
        parse_spec({"name": "s", "sampler": {"name": "lms"}}, "spec.yaml")
