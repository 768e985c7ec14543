"""Seeded sampling: the noise of sample i comes from its own generator seeded by seeds[i].

A trial's images therefore do not depend on batch size, worker count or placement, and every trial
of a study sees the same noise (common random numbers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from skipsearch import deadline
from skipsearch.data import to_uint8
from skipsearch.errors import SampleError
from skipsearch.diffusion.samplers import get_sampler, nfe
from skipsearch.diffusion.schedules import karras_sigmas
from skipsearch.progress import Progress


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "heun"
    steps: int = 10
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    @property
    def nfe(self) -> int:
        return nfe(self.name, self.steps)

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


def generate(denoiser: Callable[..., torch.Tensor], seeds: Sequence[int],
             shape: tuple[int, ...], sampler: SamplerConfig, *, batch_size: int = 500,
             device: torch.device | str = "cpu", progress: bool = False,
             labels: Sequence[int] | None = None, desc: str = "sampling") -> torch.Tensor:
    """uint8 images (N, C, H, W) for the given seeds; ``labels`` (one per seed) for a class-conditional
    model, else its null label (the unconditional model). ``progress`` counts samples under ``desc``
    (``skipsearch.progress``)."""
    device = torch.device(device)
    sigmas, fn = sampler.sigmas(), get_sampler(sampler.name)
    out = []
    with Progress(len(seeds), desc, "samples", enabled=progress, leave=False) as bar:
        for start in range(0, len(seeds), batch_size):
            x = latents(seeds[start : start + batch_size], shape).to(device) * float(sigmas[0])
            net = denoiser
            if labels is not None:
                y = torch.as_tensor(list(labels[start : start + batch_size]), dtype=torch.long, device=device)
                net = functools.partial(denoiser, class_labels=y)
            x = fn(_within_deadline(net), x, sigmas.to(device))
            if not torch.isfinite(x).all():
                raise SampleError(f"non-finite values in samples {start}..{start + len(x) - 1} (NaN or inf)")
            out.append(to_uint8(x).cpu())
            bar.update(len(x))
    return torch.cat(out)
