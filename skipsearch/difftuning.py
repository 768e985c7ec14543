"""Diff-Tuning's noise-level weighting (Zhong et al., NeurIPS 2024) for EDM-style models, and its knowledge bank.

The official code weights by *sampling* noise levels, not by scaling the loss: with t in {0..T-1} the
downstream (reconsolidation) batch draws P(t) ~ (t+1)^s and the knowledge-bank (retention) batch draws
P(t) ~ (T-t)^s'. EDM's sigma is continuous, so skipsearch maps t/T to a noise quantile u in [0, 1] on the
sampler's range in ln sigma:

    ln sigma = ln sigma_min + u (ln sigma_max - ln sigma_min)      (u = 0: least noise, u = 1: most)

and draws u with density proportional to u^s (downstream) or (1-u)^s' (bank), by inverse CDF:
u = v^(1/(s+1)) and u = 1 - v^(1/(s'+1)) with v uniform. s = s' = 0 is uniform in ln sigma (plain
fine-tuning's baseline when the bank fraction is 0 too).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict

import numpy as np
import torch

from skipsearch.generate import SamplerConfig, generate
from skipsearch.models import LoadedModel


def reconsolidation_quantiles(n: int, s: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """u in [0, 1] with density (s+1) u^s: high noise favoured for the new domain's batch."""
    if s < 0:
        raise ValueError(f"the reconsolidation exponent s must be >= 0, got {s}")
    return torch.rand(n, generator=generator, dtype=torch.float64) ** (1.0 / (s + 1.0))


def retention_quantiles(n: int, s_prime: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """u in [0, 1] with density (s'+1) (1-u)^s': low noise favoured for the knowledge bank's batch."""
    if s_prime < 0:
        raise ValueError(f"the retention exponent s' must be >= 0, got {s_prime}")
    return 1.0 - torch.rand(n, generator=generator, dtype=torch.float64) ** (1.0 / (s_prime + 1.0))


def quantile_to_sigma(u: torch.Tensor, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """The documented mapping: u is linear in ln sigma over the sampler's range."""
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return torch.exp(lo + u * (hi - lo))


def bank_path(loaded: LoadedModel, sampler: SamplerConfig, count: int, seed: int) -> str:
    from skipsearch.metrics import cache_dir

    key = json.dumps({"model": loaded.info.model_id, "hash": loaded.info.weights_hash, "sampler": asdict(sampler),
                      "count": count, "seed": seed}, sort_keys=True)
    return str(cache_dir() / f"bank-{loaded.info.model_id}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz")


def knowledge_bank(loaded: LoadedModel, sampler: SamplerConfig, count: int, seed: int = 2_000_000,
                   batch_size: int = 500, device: str = "cpu") -> torch.Tensor:
    """uint8 images sampled from the pre-trained model before any fine-tuning, cached on disk by
    (model hash, sampler, count, seed) and reused by every trial."""
    path = bank_path(loaded, sampler, count, seed)
    if os.path.exists(path):
        return torch.from_numpy(np.load(path)["images"])
    info = loaded.info
    images = generate(loaded.denoiser, range(seed, seed + count), (info.img_channels, info.resolution,
                      info.resolution), sampler, batch_size=batch_size, device=device, progress=True)
    tmp = path.removesuffix(".npz") + ".tmp.npz"
    np.savez(tmp, images=images.numpy())
    os.replace(tmp, path)
    return images
