"""Diff-Tuning's noise-level weighting (Zhong et al., NeurIPS 2024) for EDM-style models, and its knowledge bank.

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

import hashlib
import json
import math
from pathlib import Path
from collections.abc import Iterator
from dataclasses import asdict
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from skipsearch import deadline
from skipsearch.errors import DivergedError
from skipsearch.generate import SamplerConfig, generate
from skipsearch.models import LoadedModel
from skipsearch.networks import EDMPrecond, denoising_error


class DiffTuningWeights(BaseModel):
    """One trial's fine-tuning recipe. s = 0 and r = 0 is plain fine-tuning (the study's baseline)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    family: Literal["diff_tuning"] = "diff_tuning"
    s: float = Field(1.0, ge=0, le=100)  # reconsolidation exponent: new-domain batch draws u ~ u^s
    s_prime: float = Field(1.0, ge=0, le=100)  # retention exponent: bank batch draws u ~ (1-u)^s'
    r: float = Field(0.2, ge=0.0, lt=1.0)  # bank fraction of each batch
    lam: float = Field(0.1, ge=0, le=1000)  # retention weight
    lr: float = Field(1e-4, gt=0, le=1)
    steps: int = Field(1000, ge=1, le=10_000_000)

    def is_plain(self) -> bool:
        return self.s == 0 and self.r == 0

    def bank_count(self, batch_size: int) -> int:
        return min(batch_size - 1, round(self.r * batch_size))



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


def bank_path(loaded: LoadedModel, sampler: SamplerConfig, count: int, seed: int) -> Path:
    from skipsearch.metrics import cache_dir

    key = json.dumps({"model": loaded.info.model_id, "hash": loaded.info.weights_hash, "sampler": asdict(sampler),
                      "count": count, "seed": seed}, sort_keys=True)
    return cache_dir() / f"bank-{loaded.info.model_id}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def knowledge_bank(loaded: LoadedModel, sampler: SamplerConfig, count: int, seed: int = 2_000_000,
                   batch_size: int = 500, device: str = "cpu") -> torch.Tensor:
    """uint8 images sampled from the pre-trained model before any fine-tuning, cached on disk by
    (model hash, sampler, count, seed) and reused by every trial."""
    from skipsearch.metrics import cached_array, write_cached_array

    path = bank_path(loaded, sampler, count, seed)
    info = loaded.info
    shape = (count, info.img_channels, info.resolution, info.resolution)
    images = cached_array(path, "images")
    if images is not None and tuple(images.shape) == shape and images.dtype == torch.uint8:
        return images
    images = generate(loaded.denoiser, range(seed, seed + count), shape[1:], sampler, batch_size=batch_size,
                      device=device, progress=True)
    write_cached_array(path, "images", images)
    return images


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


def finetune(denoiser: EDMPrecond, new_images: torch.Tensor, bank: torch.Tensor | None, w: DiffTuningWeights,
             *, batch_size: int, sigma_range: tuple[float, float], seed: int,
             report_at: tuple[int, ...] = (), new_labels: torch.Tensor | None = None) -> Iterator[int]:
    """Train ``denoiser`` in place; yields the step count at each of ``report_at`` and at the end, with the
    network in eval mode (sample from it there), then trains on. Inputs are float images in [-1, 1] on
    the model's device; batches are drawn with replacement from a generator seeded by ``seed``. A
    class-conditional network (``net.num_classes`` > 0) gets ``new_labels`` for the new images (the null
    label where None) and the null label for the bank."""
    n_bank = w.bank_count(batch_size) if bank is not None and len(bank) else 0
    n_new = batch_size - n_bank
    null = getattr(denoiser.net, "num_classes", 0)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(denoiser.net.parameters(), lr=w.lr)
    denoiser.requires_grad_(True)
    stops = sorted({s for s in report_at if s < w.steps} | {w.steps})
    for step in range(1, w.steps + 1):
        deadline.check()
        denoiser.train()
        idx = torch.randint(len(new_images), (n_new,), generator=g)
        x_new = new_images[idx]
        x_bank = bank[torch.randint(len(bank), (n_bank,), generator=g)] if n_bank else new_images[:0]
        labels = None  # an unconditional network gets none; a conditional one its null label for the bank
        if null:
            labels = torch.full((batch_size,), null, dtype=torch.long)
            if new_labels is not None:
                labels[:n_new] = new_labels[idx]
        loss = diff_tuning_loss(denoiser, x_new, x_bank, w, sigma_range, g, labels)
        if not torch.isfinite(loss):
            raise DivergedError(f"fine-tuning loss is {loss.item()} at step {step} (lr {w.lr:.3g} too high?)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in stops:
            denoiser.eval().requires_grad_(False)
            yield step
            denoiser.requires_grad_(True)
