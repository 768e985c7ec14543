"""Diff-Tuning's noise-level weighting (Zhong et al., NeurIPS 2024) for EDM-style models, and its loss.

The official code weights by *sampling* noise levels, not by scaling the loss: with t in {0..T-1} the
downstream (reconsolidation) batch draws P(t) ~ (t+1)^s and the knowledge-bank (retention) batch draws
P(t) ~ (T-t)^s'. EDM's sigma is continuous, so skipsearch maps t/T to a noise quantile u in [0, 1] on the
sampler's range in ln sigma:

    ln sigma = ln sigma_min + u (ln sigma_max - ln sigma_min)      (u = 0: least noise, u = 1: most)

and draws u with density proportional to u^s (downstream) or (1-u)^s' (bank), by inverse CDF:
u = v^(1/(s+1)) and u = 1 - v^(1/(s'+1)) with v uniform. s = s' = 0 is uniform in ln sigma (plain
fine-tuning's baseline when the bank fraction is 0 too).

One step trains on a mixed batch: a fraction r of bank images (rounded to whole images), the rest from
the new domain, and minimises mean(L_down) + lambda mean(L_bank) with EDM's per-sample loss. With a
class-conditional model, the new images keep their labels and bank images are trained under the null
label (unconditionally), as in the official code; with an unconditional model both are unlabelled.
"""

from __future__ import annotations

import math

import torch

from skipsearch.diffusion.preconditioning import EDMPrecond, denoising_error
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights


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


def diff_tuning_loss(denoiser: EDMPrecond, x_new: torch.Tensor, x_bank: torch.Tensor, w: DiffTuningWeights,
                     sigma_range: tuple[float, float], generator: torch.Generator,
                     class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """mean(L_down) + lambda mean(L_bank), one forward pass over the mixed batch (labels: new, then bank)."""
    u = torch.cat([reconsolidation_quantiles(len(x_new), w.s, generator),
                   retention_quantiles(len(x_bank), w.s_prime, generator)])
    sigma = quantile_to_sigma(u, *sigma_range).to(x_new.device, torch.float32)
    per_sample = denoising_error(denoiser, torch.cat([x_new, x_bank]), sigma, generator, class_labels)
    loss = per_sample[: len(x_new)].mean()
    if len(x_bank):
        loss = loss + w.lam * per_sample[len(x_new):].mean()
    return loss
