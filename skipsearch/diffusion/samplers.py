"""Deterministic EDM samplers as plain functions over (denoiser, x, sigmas), k-diffusion style.

A sampler can start part way (``start``: x is then the state before step ``start``) and report the state
before each step (``on_state``): trials that share the first steps of a trajectory start from its cached
states (``skipsearch.diffusion.trajectories``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from skipsearch.diffusion.kinds import kind_of
from skipsearch.errors import UserError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OnState = Callable[[int, torch.Tensor], None]  # (step k, the state before step k); k = steps is the result


def _d(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE: (x - D(x, sigma)) / sigma."""
    return (x - denoiser(x, sigma.to(x.dtype))) / sigma.to(x.dtype)


def _steps(sigmas: torch.Tensor, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    """(sigma, sigma_next on the device, whether sigma_next > 0) per step. The comparison is made on the host
    copy, once: on a GPU tensor it would make the host wait for the device at every step."""
    on_device = sigmas.to(device)
    last = sigmas.cpu().tolist()
    return [(on_device[i], on_device[i + 1], last[i + 1] > 0) for i in range(len(last) - 1)]


def _run(step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor], x: torch.Tensor,
         sigmas: torch.Tensor, start: int, on_state: OnState | None) -> torch.Tensor:
    steps = _steps(sigmas, x.device)
    for k in range(start, len(steps)):
        if on_state is not None:
            on_state(k, x)
        x = step(x, *steps[k])
    if on_state is not None:
        on_state(len(steps), x)
    return x


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, start: int = 0,
                 on_state: OnState | None = None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE; NFE = len(sigmas) - 1."""

    def step(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, positive: bool) -> torch.Tensor:
        return x + (sigma_next - sigma).to(x.dtype) * _d(denoiser, x, sigma)

    return _run(step, x, sigmas, start, on_state)


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, start: int = 0,
                on_state: OnState | None = None) -> torch.Tensor:
    """Algorithm 1 of Karras et al. 2022 (Heun, no churn); NFE = 2 (len(sigmas) - 1) - 1."""

    def step(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, positive: bool) -> torch.Tensor:
        dt = (sigma_next - sigma).to(x.dtype)
        d = _d(denoiser, x, sigma)
        x_next = x + dt * d
        if positive:
            x_next = x + dt * 0.5 * (d + _d(denoiser, x_next, sigma_next))
        return x_next

    return _run(step, x, sigmas, start, on_state)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler, "heun": sample_heun}


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations for ``steps`` time steps (t_0..t_{steps-1}, then 0): Heun's last step is Euler's;
    Euler and diffusers' schedulers evaluate once per step."""
    return kind_of(sampler).nfe(steps)


def step_calls(sampler: str, sigmas: torch.Tensor) -> list[tuple[int, ...]]:
    """Which noise levels (indices into ``sigmas``) each step of an EDM sampler calls the network at: Euler's
    step k at sigma_k; Heun's at sigma_k and (its corrector) at sigma_{k+1}, unless that is 0."""
    get_sampler(sampler)
    s = sigmas.tolist()
    if sampler == "euler":
        return [(k,) for k in range(len(s) - 1)]
    return [(k, k + 1) if s[k + 1] > 0 else (k,) for k in range(len(s) - 1)]


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; valid: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
