"""EDM preconditioning (Karras et al. 2022, Table 1) and the EDM training loss, for any network F.

``EDMPrecond`` turns a network F(x, c_noise[, class_labels]) into a denoiser D(x, sigma); every model family
hands the sampler a denoiser of that signature.
"""

from __future__ import annotations

import torch
from torch import nn


class EDMPrecond(nn.Module):
    """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), Karras et al. 2022, Table 1."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        s, sd = sigma[:, None, None, None], self.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        if class_labels is None:  # unconditional networks need not accept labels
            return c_skip * x + c_out * self.net(c_in * x, c_noise)
        return c_skip * x + c_out * self.net(c_in * x, c_noise, class_labels)


def denoising_error(denoiser: EDMPrecond, x0: torch.Tensor, sigma: torch.Tensor,
                    generator: torch.Generator | None = None,
                    class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample EDM loss at given sigmas: weight (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 times the squared
    error, averaged over pixels. The weight makes the network's own target unit-weighted at every sigma."""
    sd = denoiser.sigma_data
    s = sigma.to(x0.dtype)[:, None, None, None]
    noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else None)
    weight = (s**2 + sd**2) / (s * sd) ** 2
    denoised = denoiser(x0 + noise.to(x0.device) * s, s.flatten(), class_labels)
    return (weight * (denoised - x0) ** 2).flatten(1).mean(1)


def edm_loss(denoiser: EDMPrecond, x0: torch.Tensor, generator: torch.Generator | None = None,
             class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """EDM training loss: ln sigma ~ N(-1.2, 1.2^2)."""
    ln_sigma = torch.randn(x0.shape[0], generator=generator, device=x0.device) * 1.2 - 1.2
    return denoising_error(denoiser, x0, ln_sigma.exp(), generator, class_labels).mean()
