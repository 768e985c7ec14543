"""What a model family may add to sampling its denoiser, beyond EDM's samplers over D(x, sigma): samplers of its
own (diffusers' schedulers on a discrete-time model) and decoding what was sampled (a latent model's VAE).

Why an interface here: the generic sampler (``generation``) must not know any family, nor guess from attribute
names what a denoiser can do. A family's denoiser that adds something subclasses ``FamilySampling`` (the diffusers
family's ``VPDenoiser`` does); every other denoiser samples with EDM's samplers alone, and its samples are its
images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from skipsearch.errors import UserError

# Put around every network call a family's own sampler makes (timing, the trial's deadline).
Wrap = Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]


class FamilySampling:
    """A denoiser's additions to sampling; this base adds nothing (no samplers of its own, samples are images)."""

    drives_schedulers: ClassVar[bool] = False  # whether ``sample_scheduled`` runs a diffusers scheduler

    def sample_scheduled(self, noise: torch.Tensor, sampler: Any, labels: torch.Tensor | None,
                         wrap: Wrap) -> torch.Tensor:
        """x_0 from standard normal ``noise`` through the family's scheduler ``sampler.name`` (``sampler``: the
        generic sampler's ``SamplerConfig``, which imports this module)."""
        raise no_scheduler(sampler.name)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """What was sampled -> images in [-1, 1]."""
        return x

    def network(self) -> torch.nn.Module:
        """The module that every network evaluation passes through, once per sample (where a forward pre-hook
        counts them): the denoiser itself, unless the family's own samplers call an inner network directly."""
        if not isinstance(self, torch.nn.Module):
            raise TypeError(f"{type(self).__name__} is not a torch module: it must say which module is its network")
        return self


def no_scheduler(name: str) -> UserError:
    """The mistake of naming a scheduler for a denoiser whose family runs none."""
    return UserError(f"sampler {name!r} is a diffusers scheduler; it needs a diffusers model (use heun or euler for "
                     f"this one)")


def sampling_of(denoiser: object) -> FamilySampling | None:
    """The denoiser's own additions to sampling, or None for a denoiser that has none."""
    return denoiser if isinstance(denoiser, FamilySampling) else None


def network_of(denoiser: torch.nn.Module) -> torch.nn.Module:
    """The module every network evaluation of ``denoiser`` passes through (``FamilySampling.network``)."""
    family = sampling_of(denoiser)
    return denoiser if family is None else family.network()
