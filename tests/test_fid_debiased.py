"""The debiased FID removes FID's 1/N bias: on Gaussian features whose FID at N -> infinity is known exactly,
plain FID at small N is biased upwards and the Richardson combination is not (to within its spread)."""

from __future__ import annotations

import math

import pytest
import torch

from skipsearch.metrics.distance import fid, statistics
from skipsearch.metrics.fid_debiased import fid_debiased
from skipsearch.metrics.registry import METRICS


def _exact_fid(mu_a, cov_a, mu_b, cov_b) -> float:
    """|mu_a - mu_b|^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2)), via the symmetric form."""
    vals, vecs = torch.linalg.eigh(cov_b)
    root_b = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = torch.linalg.eigvalsh(root_b @ cov_a @ root_b).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * middle)


def test_debiased_fid_has_no_1_over_n_bias_where_plain_fid_has():
    gen = torch.Generator().manual_seed(7)
    d, n, reps = 8, 64, 400
    mu_a, mu_b = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.2, dtype=torch.float64)
    scale = torch.linspace(0.5, 1.5, d, dtype=torch.float64)
    cov_a, cov_b = torch.diag(scale**2), torch.eye(d, dtype=torch.float64)
    truth = _exact_fid(mu_a, cov_a, mu_b, cov_b)
    ref = statistics(torch.randn(200_000, d, generator=gen, dtype=torch.float64) + mu_b, with_sqrt=True)
    plain, debiased = [], []
    for _ in range(reps):
        x = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale + mu_a
        plain.append(fid(x, ref))
        debiased.append(fid_debiased(x, ref))
    p, q = torch.tensor(plain), torch.tensor(debiased)
    se_p, se_q = p.std() / math.sqrt(reps), q.std() / math.sqrt(reps)
    assert p.mean() - truth > 10 * se_p  # plain FID at N = 64 is clearly biased upwards
    assert abs(q.mean() - truth) < 3 * se_q  # the debiased one is not, within its own spread
    assert q.std() < 2.5 * p.std()  # at a modest price in spread


def test_debiased_fid_is_a_registered_metric_on_the_same_halves():
    m = METRICS["fid_debiased"]
    x = torch.randn(10, 3, dtype=torch.float64)
    ref = statistics(torch.randn(50, 3, dtype=torch.float64), with_sqrt=True)
    value = m(x, ref, None)["fid_debiased"]
    assert value == 2 * fid(x, ref) - (fid(x[:5], ref) + fid(x[5:], ref)) / 2
    with pytest.raises(ValueError, match="at least 4 samples"):
        fid_debiased(x[:3], ref)
