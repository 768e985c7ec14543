"""Sampling through diffusers' own schedulers, for the diffusers family's models (``diffusers_vp.VPDenoiser``).

A scheduler is built from the model's training-schedule config, the way a diffusers pipeline builds it, so a
study samples what the user's pipeline would: ``ddim`` (DDIMScheduler, eta = 0), ``dpmpp_2m``
(DPMSolverMultistepScheduler, DPM-Solver++ of order 2) and ``euler_discrete`` (EulerDiscreteScheduler). All
three are deterministic given the initial noise, which comes from each sample's own seed. One network
evaluation per step (two with classifier-free guidance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from skipsearch.diffusion.kinds import SAMPLER_KINDS

# name -> (diffusers class, options): the sampler table's schedulers (``diffusion.kinds``)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    k.name: (k.scheduler_class, k.scheduler_options) for k in SAMPLER_KINDS.values() if k.drives == "scheduler"}

# (x_t as the scheduler scaled it, timestep) -> the network's prediction
ModelOutput = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_scheduler(name: str, config: dict[str, Any]):
    """A fresh scheduler of ``name`` from a model's scheduler config (its training schedule)."""
    import diffusers

    cls_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config({**config, **overrides})


@torch.no_grad()
def sample_scheduler(model_output: ModelOutput, noise: torch.Tensor, name: str, steps: int,
                     config: dict[str, Any]) -> torch.Tensor:
    """x_0 from standard normal ``noise`` in ``steps`` scheduler steps; a fresh scheduler per call, so its
    multistep state never crosses batches."""
    scheduler = make_scheduler(name, config)
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = model_output(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, return_dict=False)[0]
    return x
