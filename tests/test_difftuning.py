"""Diff-Tuning groundwork: the noise-level samplers follow u^s and (1-u)^s', and the bank is built once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from skipsearch.methods.diff_tuning.bank import bank_path, knowledge_bank
from skipsearch.methods.diff_tuning.noise import quantile_to_sigma, reconsolidation_quantiles, retention_quantiles
from skipsearch.diffusion.generation import SamplerConfig

N = 200_000


@pytest.mark.parametrize("s", [0.0, 1.0, 3.0])
def test_reconsolidation_density_is_u_to_the_s(s):
    u = reconsolidation_quantiles(N, s, torch.Generator().manual_seed(1)).numpy()
    assert scipy.stats.kstest(u, lambda x: np.clip(x, 0, 1) ** (s + 1)).pvalue > 1e-3
    # a sampler that ignored the exponent (uniform) is rejected when s > 0
    if s > 0:
        assert scipy.stats.kstest(u, "uniform").pvalue < 1e-6
    assert u.mean() == pytest.approx((s + 1) / (s + 2), abs=3e-3)  # E[u] under density (s+1) u^s


@pytest.mark.parametrize("s_prime", [0.0, 1.0, 3.0])
def test_retention_density_is_one_minus_u_to_the_s_prime(s_prime):
    u = retention_quantiles(N, s_prime, torch.Generator().manual_seed(2)).numpy()
    cdf = lambda x: 1 - (1 - np.clip(x, 0, 1)) ** (s_prime + 1)  # noqa: E731
    assert scipy.stats.kstest(u, cdf).pvalue > 1e-3
    if s_prime > 0:
        assert scipy.stats.kstest(u, "uniform").pvalue < 1e-6
        assert scipy.stats.kstest(u, lambda x: np.clip(x, 0, 1) ** (s_prime + 1)).pvalue < 1e-6  # not the mirror


def test_quantile_maps_linearly_in_log_sigma():
    sig = quantile_to_sigma(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), 0.002, 80.0)
    assert sig[0].item() == pytest.approx(0.002) and sig[2].item() == pytest.approx(80.0)
    assert sig[1].item() == pytest.approx((0.002 * 80.0) ** 0.5)
    with pytest.raises(ValueError):
        reconsolidation_quantiles(4, -1.0)


def test_bank_is_computed_once_per_model_sampler_count_and_reused(tmp_path, monkeypatch, fresh_model):
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path))
    calls = []
    import skipsearch.methods.diff_tuning.bank as dt

    real = dt.generate
    monkeypatch.setattr(dt, "generate", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    sampler = SamplerConfig("euler", 2)
    first = knowledge_bank(fresh_model, sampler, 24)
    again = knowledge_bank(fresh_model, sampler, 24)
    assert calls == [24] and torch.equal(first, again) and first.dtype == torch.uint8
    knowledge_bank(fresh_model, sampler, 32)  # another count: another bank
    knowledge_bank(fresh_model, SamplerConfig("euler", 3), 24)  # another sampler: another bank
    assert calls == [24, 32, 24]
    assert len({bank_path(fresh_model, sampler, 24, 2_000_000), bank_path(fresh_model, sampler, 32, 2_000_000)}) == 2
