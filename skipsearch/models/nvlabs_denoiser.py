"""``NVlabsDenoiser``: NVlabs' preconditioned network as skipsearch calls a denoiser (``skipsearch.models.edm_nvlabs``).

Apart from the family so that parsing a spec's ``model: {family: edm}`` section imports no torch.
"""

from __future__ import annotations

import torch
from torch import nn

from skipsearch.errors import UserError


class NVlabsDenoiser(nn.Module):
    """NVlabs' preconditioned network as skipsearch calls a denoiser: D(x, sigma[, class_labels]) with sigma a
    number or a tensor, and integer labels turned into the one-hot rows NVlabs' networks take."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                guidance_scale: float = 1.0, cfg_batched: bool = True) -> torch.Tensor:
        if guidance_scale != 1.0:
            raise UserError("sampler.guidance_scale: NVlabs EDM networks have no null label to guide against; "
                            "sample them with guidance_scale 1")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        return self.net(x, sigma, self._one_hot(class_labels, x))

    def _one_hot(self, labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        if labels is None:
            return None  # NVlabs' precond gives a conditional network an all-zero label row
        if not self.label_dim:
            raise UserError("class labels given to an unconditional NVlabs network (label_dim 0); sample it "
                            "without classes")
        labels = torch.as_tensor(labels, device=x.device)
        if labels.is_floating_point():
            if labels.shape[-1:] != (self.label_dim,):
                raise UserError(f"class labels: float labels must be rows of label_dim={self.label_dim} values "
                                f"(one-hot), got shape {tuple(labels.shape)}")
            return labels
        labels = labels.reshape(-1).long()
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.label_dim):
            raise UserError(f"class labels must be 0..{self.label_dim - 1} for this network (label_dim "
                            f"{self.label_dim}), got {int(labels.min())}..{int(labels.max())}")
        return nn.functional.one_hot(labels, self.label_dim).to(torch.float32)
