"""FID and KID, exact, in float64 on the trial's device.

torch-fidelity's Fréchet distance takes the eigenvalues of the non-symmetric d x d product Σ_gen Σ_ref with
NumPy on the CPU for every trial (2 s at d = 2048 on two cores, most of a GPU trial). The same trace term,
tr sqrt(Σ_gen Σ_ref), is the sum of the square roots of the eigenvalues of a symmetric matrix:

- N >= d: of  S Σ_gen S,  with S = sqrt(Σ_ref) computed once per reference (``Statistics.sqrt_sigma``);
- N < d:  of  X Σ_ref X' / (N - 1), the N x N Gram form, with X the centred generated features. Σ_gen has
  rank N - 1 at most, and this form has exactly its nonzero eigenvalues, so the d - N + 1 zeros that
  torch-fidelity's route turns into rounding-level square roots never appear.

Both are symmetric positive semi-definite, so ``eigvalsh`` applies (faster and more accurate than a general
eigensolver); rounding-level negative eigenvalues are clamped to zero. tests/test_metrics.py and
tests/test_inception.py compare against torch-fidelity on real features and against a high-precision
computation. KID is torch-fidelity's estimator (unbiased MMD², cubic polynomial kernel with gamma = 1/d and
coef0 = 1, ``kid_subsets`` subsets drawn by ``numpy.random.RandomState(seed)`` as torch-fidelity draws them),
evaluated in batches of subsets on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KID_SUBSETS = 100  # torch-fidelity's defaults
KID_SEED = 2020
_KID_CHUNK_BYTES = 256 * 2**20  # memory for one batch of subsets' features and kernels


@dataclass(frozen=True)
class Statistics:
    """Mean and covariance of a feature set (float64); a reference's also carries sqrt(Σ)."""

    mu: torch.Tensor  # (d,)
    sigma: torch.Tensor  # (d, d), unbiased (N - 1), as numpy.cov
    n: int
    sqrt_sigma: torch.Tensor | None = None  # symmetric PSD square root of sigma

    def to(self, device: torch.device | str) -> Statistics:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Statistics(mu=move(self.mu), sigma=move(self.sigma), n=self.n, sqrt_sigma=move(self.sqrt_sigma))

    def as_numpy(self) -> dict[str, np.ndarray]:
        """torch-fidelity's form, {"mu", "sigma"}, for its own distance (tests, the benchmark)."""
        return {"mu": self.mu.cpu().numpy(), "sigma": self.sigma.cpu().numpy()}


def statistics(features: torch.Tensor, with_sqrt: bool = False) -> Statistics:
    """Mean and covariance (as ``numpy.cov``) on the features' device; ``with_sqrt`` for a reference."""
    x = features.to(torch.float64)
    mu = x.mean(0)
    centred = x - mu
    sigma = centred.T @ centred / (len(x) - 1)
    return Statistics(mu=mu, sigma=sigma, n=len(x), sqrt_sigma=psd_sqrt(sigma) if with_sqrt else None)


def psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a covariance, from its eigendecomposition (negative rounding-level
    eigenvalues clamped to zero)."""
    values, vectors = torch.linalg.eigh((sigma + sigma.T) / 2)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    return (root + root.T) / 2  # exactly symmetric


def fid(features: torch.Tensor, ref: Statistics) -> float:
    """FID of generated ``features`` (N, d) against the reference statistics, on the reference's device."""
    x = features.to(device=ref.mu.device, dtype=torch.float64)
    n, d = x.shape
    mu = x.mean(0)
    centred = x - mu
    if n <= d:  # Gram form: the N x N matrix with the nonzero eigenvalues
        inner = centred @ ref.sigma @ centred.T / (n - 1)
        trace_gen = (centred * centred).sum() / (n - 1)
    else:
        if ref.sqrt_sigma is None:
            raise ValueError("reference statistics without sqrt_sigma: build them with statistics(..., with_sqrt=True)")
        sigma = centred.T @ centred / (n - 1)
        inner = ref.sqrt_sigma @ sigma @ ref.sqrt_sigma
        trace_gen = sigma.diagonal().sum()
    eigenvalues = torch.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = eigenvalues.clamp(min=0).sqrt().sum()
    diff = mu - ref.mu
    return float(diff @ diff + trace_gen + ref.sigma.diagonal().sum() - 2 * tr_covmean)


def kid_subsets(n_1: int, n_2: int, size: int, subsets: int = KID_SUBSETS,
                seed: int = KID_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The row indices (subsets, size) of each set, drawn exactly as torch-fidelity draws them."""
    rng = np.random.RandomState(seed)
    rows_1, rows_2 = [], []
    for _ in range(subsets):
        rows_1.append(rng.choice(n_1, size, replace=False))
        rows_2.append(rng.choice(n_2, size, replace=False))
    return np.stack(rows_1), np.stack(rows_2)


def kid(features_1: torch.Tensor, features_2: torch.Tensor, subset_size: int = 100, subsets: int = KID_SUBSETS,
        seed: int = KID_SEED) -> tuple[float, float]:
    """Unbiased KID (mean, population std over subsets), on ``features_2``'s device; the subset size is capped
    by the smaller set, as skipsearch always has."""
    device = features_2.device
    x = features_1.to(device=device, dtype=torch.float64)
    y = features_2.to(dtype=torch.float64)
    m = min(subset_size, len(x), len(y))
    rows_1, rows_2 = (torch.from_numpy(r).to(device) for r in kid_subsets(len(x), len(y), m, subsets, seed))
    gamma = 1.0 / x.shape[1]
    per_subset = 8 * (2 * m * x.shape[1] + 3 * m * m)
    chunk = max(1, _KID_CHUNK_BYTES // per_subset)
    mmds = []
    for start in range(0, subsets, chunk):
        a, b = x[rows_1[start : start + chunk]], y[rows_2[start : start + chunk]]
        k_aa = (a @ a.mT * gamma + 1) ** 3
        k_bb = (b @ b.mT * gamma + 1) ** 3
        k_ab = (a @ b.mT * gamma + 1) ** 3
        off_diagonal = (k_aa.sum((1, 2)) - k_aa.diagonal(dim1=1, dim2=2).sum(1)
                        + k_bb.sum((1, 2)) - k_bb.diagonal(dim1=1, dim2=2).sum(1))
        mmds.append(off_diagonal / (m * (m - 1)) - 2 * k_ab.sum((1, 2)) / (m * m))
    values = torch.cat(mmds)
    return float(values.mean()), float(values.std(correction=0))
