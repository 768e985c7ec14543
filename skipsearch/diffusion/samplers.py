"""Deterministic EDM samplers as plain functions over (denoiser, x, sigmas), k-diffusion style."""

from __future__ import annotations

from collections.abc import Callable

import torch

from skipsearch.errors import UserError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _d(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE: (x - D(x, sigma)) / sigma."""
    return (x - denoiser(x, sigma.to(x.dtype))) / sigma.to(x.dtype)


def _steps(sigmas: torch.Tensor, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    """(sigma, sigma_next on the device, whether sigma_next > 0) per step. The comparison is made on the host
    copy, once: on a GPU tensor it would make the host wait for the device at every step."""
    on_device = sigmas.to(device)
    last = sigmas.cpu().tolist()
    return [(on_device[i], on_device[i + 1], last[i + 1] > 0) for i in range(len(last) - 1)]


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Euler's method on the probability-flow ODE; NFE = len(sigmas) - 1."""
    for sigma, sigma_next, _ in _steps(sigmas, x.device):
        x = x + (sigma_next - sigma).to(x.dtype) * _d(denoiser, x, sigma)
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 of Karras et al. 2022 (Heun, no churn); NFE = 2 (len(sigmas) - 1) - 1."""
    for sigma, sigma_next, positive in _steps(sigmas, x.device):
        dt = (sigma_next - sigma).to(x.dtype)
        d = _d(denoiser, x, sigma)
        x_next = x + dt * d
        if positive:
            x_next = x + dt * 0.5 * (d + _d(denoiser, x_next, sigma_next))
        x = x_next
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler, "heun": sample_heun}


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations for ``steps`` time steps (t_0..t_{steps-1}, then 0): Heun's last step is Euler's;
    Euler and diffusers' schedulers evaluate once per step."""
    return 2 * steps - 1 if sampler == "heun" else steps


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; valid: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
