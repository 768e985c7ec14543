"""A trial's first samples as one PNG grid: the same seeds in every trial, so grids compare image by image.

The grid travels inside the trial's ``Score`` (base64, a few kB), also from a Ray worker, and becomes a
per-trial artifact in the Optuna study (``search.annotations``) and a picture in the report.
"""

from __future__ import annotations

import base64
import io

import torch

PREVIEW_COUNT = 16  # the first samples of a trial (seeds metric.seed .. metric.seed + 15)


def grid_png(images: torch.Tensor, count: int = PREVIEW_COUNT, nrow: int = 4) -> str:
    """Base64 PNG of the first ``count`` uint8 images (N, C, H, W), ``nrow`` to a row (four: a trial's 16 as a
    square), enlarged for viewing."""
    from PIL import Image
    from torchvision.utils import make_grid

    first = images[:count].to("cpu")
    scale = max(1, 64 // first.shape[-1])  # small images (16 px digits) are hard to judge at their own size
    if scale > 1:
        first = first.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
    grid = make_grid(first, nrow=nrow, padding=2, pad_value=255)  # (3, H, W) uint8; grey images are repeated
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy()).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_bytes(preview: str) -> bytes:
    return base64.b64decode(preview)
