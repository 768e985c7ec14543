"""EDM's noise levels (Karras et al. 2022): a pure builder, so samplers never compute their time steps themselves."""

from __future__ import annotations

import torch


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM time steps t_0..t_{n-1} (Karras et al. 2022, eq. 5) with the trailing t_n = 0; float64."""
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    i = torch.arange(n, dtype=torch.float64)
    ramp = i / max(n - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
