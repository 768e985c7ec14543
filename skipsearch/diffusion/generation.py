"""Seeded sampling: the noise of sample i comes from its own generator seeded by seeds[i].

A trial's images therefore do not depend on batch size, worker count or placement, and every trial
of a study sees the same noise (common random numbers). EDM's samplers (``heun``, ``euler``) run on any
family's denoiser; diffusers' schedulers (``ddim``, ``dpmpp_2m``, ``euler_discrete``) on a model trained in
discrete time (``VPDenoiser``). A latent model's samples are decoded by its VAE before they become images.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from skipsearch import deadline
from skipsearch.data import to_uint8
from skipsearch.errors import SampleError, UserError
from skipsearch.diffusion.samplers import get_sampler, nfe
from skipsearch.diffusion.schedulers import SCHEDULERS, sample_scheduler
from skipsearch.diffusion.schedules import karras_sigmas
from skipsearch.progress import Progress


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "heun"
    steps: int = 10
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    guidance_scale: float = 1.0  # classifier-free guidance; 1 = none
    cfg_batched: bool = True  # with guidance: the conditional and unconditional passes share one batch

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    @property
    def scheduler(self) -> bool:
        """Whether a diffusers scheduler drives the sampling (else one of EDM's samplers)."""
        return self.name in SCHEDULERS

    @property
    def nfe(self) -> int:
        """Network evaluations per sample: with guidance, the conditional and unconditional passes both
        count, batched together or not."""
        return nfe(self.name, self.steps) * (2 if self.guided else 1)

    def sigmas(self) -> torch.Tensor:
        return karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)


def latents(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise, one CPU generator per sample, so it is the same on every device."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _within_deadline(denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The denoiser, checking the trial's deadline before every network evaluation."""

    def call(*args, **kwargs):
        deadline.check()
        return denoiser(*args, **kwargs)

    return call


def generate(denoiser: nn.Module, seeds: Sequence[int], shape: tuple[int, ...], sampler: SamplerConfig, *,
             batch_size: int = 500, device: torch.device | str = "cpu", progress: bool = False,
             labels: Sequence[int] | None = None, desc: str = "sampling",
             wrap: Callable[[Callable], Callable] = lambda f: f) -> torch.Tensor:
    """uint8 images (N, C, H, W) for the given seeds, from noise of ``shape`` per sample; ``labels`` (one per
    seed) index a conditional model's conditions, else the model samples unconditionally. ``wrap`` is put
    around every network call (timing). ``progress`` counts samples under ``desc`` (``skipsearch.progress``)."""
    device = torch.device(device)
    check_sampler(denoiser, sampler)
    out = []
    with Progress(len(seeds), desc, "samples", enabled=progress, leave=False) as bar:
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start : start + batch_size]
            x = sample_seeds(denoiser, chunk, shape, sampler, device=device, wrap=wrap,
                             labels=None if labels is None else labels[start : start + batch_size])
            if not torch.isfinite(x).all():
                raise SampleError(non_finite(start, len(x)))
            out.append(to_uint8(x).cpu())
            bar.update(len(x))
    return torch.cat(out)


def check_sampler(denoiser: nn.Module, sampler: SamplerConfig) -> None:
    if sampler.scheduler and not hasattr(denoiser, "model_output"):
        raise UserError(f"sampler {sampler.name!r} is a diffusers scheduler; it needs a diffusers model (use heun or "
                        f"euler for this one)")


def non_finite(start: int, count: int) -> str:
    return f"non-finite values in samples {start}..{start + count - 1} (NaN or inf)"


def sample_seeds(denoiser: nn.Module, seeds: Sequence[int], shape: tuple[int, ...], sampler: SamplerConfig, *,
                 device: torch.device, labels: Sequence[int] | None = None, copies: int = 1,
                 wrap: Callable[[Callable], Callable] = lambda f: f) -> torch.Tensor:
    """One network batch: the samples (float, on ``device``, decoded when the model is latent) of ``seeds``,
    ``copies`` times over (copy c is rows c*len(seeds) ...): several trials sharing a batch see the same noise."""
    noise = latents(seeds, shape).to(device)
    y = None
    if labels is not None:
        y = torch.as_tensor(list(labels), dtype=torch.long, device=device)
    if copies > 1:
        noise = noise.repeat(copies, *([1] * (noise.dim() - 1)))
        y = None if y is None else y.repeat(copies)
    x = _sample(denoiser, noise, sampler, y, wrap)
    return wrap(denoiser.decode)(x) if hasattr(denoiser, "decode") else x


def _sample(denoiser: nn.Module, noise: torch.Tensor, sampler: SamplerConfig, y: torch.Tensor | None,
            wrap: Callable[[Callable], Callable]) -> torch.Tensor:
    guide = {"guidance_scale": sampler.guidance_scale, "cfg_batched": sampler.cfg_batched} if sampler.guided else {}
    if sampler.scheduler:
        output = wrap(functools.partial(denoiser.model_output, cond=y, **guide))
        return sample_scheduler(_within_deadline(output), noise, sampler.name, sampler.steps,
                                denoiser.scheduler_config)
    sigmas = sampler.sigmas()
    net = functools.partial(denoiser, **({"class_labels": y} if y is not None else {}), **guide)
    return get_sampler(sampler.name)(_within_deadline(wrap(net)), noise * float(sigmas[0]), sigmas)
