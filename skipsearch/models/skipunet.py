"""The embedded families' network: a small UNet with long, concatenated skips (wrapped in EDMPrecond).

Each decoder block receives the hidden state and its encoder skip as separate arguments, so a forward
pre-hook can scale the skip without touching the model class (this is how Skip-Tuning is applied).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, channels // 4), num_channels=channels, eps=1e-6)


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of c_noise followed by a two-layer MLP (as in EDM/ADM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=c_noise.device) / half)
        angles = (c_noise.float()[:, None] * 250.0) * freqs[None, :]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, noise-embedding shift, GroupNorm -> SiLU -> conv, plus a 1x1 projection."""

    def __init__(self, cin: int, cout: int, emb_channels: int):
        super().__init__()
        self.norm0, self.conv0 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_channels, cout)
        self.norm1, self.conv1 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = h + self.affine(emb)[:, :, None, None]
        h = self.conv1(F.silu(self.norm1(h)))
        return h + self.skip(x)


class UpBlock(nn.Module):
    """Decoder block: ``ResBlock(cat([h, skip]))``. The skip is its own argument so hooks can scale it."""

    def __init__(self, cin: int, cskip: int, cout: int, emb_channels: int):
        super().__init__()
        self.res = ResBlock(cin + cskip, cout, emb_channels)

    def forward(self, h: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.res(torch.cat([h, skip], dim=1), emb)


class SkipUNet(nn.Module):
    """F(x, c_noise[, class_labels]): one long skip per resolution level, consumed innermost first by the decoder.

    With ``num_classes`` > 0 the model is class-conditional: a learned label embedding is added to the noise
    embedding, and label ``num_classes`` (also used where no labels are given) is the null label, the
    unconditional model that classifier-free training leaves behind.
    """

    def __init__(self, img_channels: int = 1, channels: tuple[int, ...] = (32, 64, 64), emb_channels: int = 128,
                 num_classes: int = 0):
        super().__init__()
        self.levels, self.num_classes = len(channels), num_classes
        self.embed = NoiseEmbedding(emb_channels)
        self.label_embed = nn.Embedding(num_classes + 1, emb_channels) if num_classes else None
        self.conv_in = nn.Conv2d(img_channels, channels[0], 3, padding=1)
        cin, self.enc, self.down = channels[0], nn.ModuleList(), nn.ModuleList()
        for i, c in enumerate(channels):
            self.enc.append(ResBlock(cin, c, emb_channels))
            if i < self.levels - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            cin = c
        self.mid = ResBlock(cin, cin, emb_channels)
        self.dec, self.up = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(self.levels)):
            self.dec.append(UpBlock(cin, channels[i], channels[i], emb_channels))
            cin = channels[i]
            if i > 0:
                self.up.append(nn.Conv2d(cin, cin, 3, padding=1))
        self.norm_out, self.conv_out = _norm(cin), nn.Conv2d(cin, img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(c_noise)
        if self.label_embed is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(class_labels.to(x.device))
        h, skips = self.conv_in(x), []
        for i, block in enumerate(self.enc):
            h = block(h, emb)
            skips.append(h)
            if i < self.levels - 1:
                h = self.down[i](h)
        h = self.mid(h, emb)
        for j, block in enumerate(self.dec):
            h = block(h, skips.pop(), emb)
            if j < self.levels - 1:
                h = self.up[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
