"""Adapter for the embedded SkipUNet (wrapped in EDMPrecond): decoder block j takes skip k - j."""

from __future__ import annotations

import torch
from torch import nn

from skipsearch.networks import EDMPrecond, SkipUNet


class EmbeddedUNetAdapter:
    name = "embedded SkipUNet (EDMPrecond)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, EDMPrecond) and isinstance(model.net, SkipUNet)

    def skip_points(self, model: nn.Module):
        from skipsearch.adapters import SkipPoint

        k = model.net.levels - 1
        return sorted((SkipPoint(k - j, block, 1) for j, block in enumerate(model.net.dec)), key=lambda p: p.index)

    def sigma_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        sigma = kwargs["sigma"] if "sigma" in kwargs else args[1]
        return torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
