"""Image data sets as uint8 tensors (N, C, H, W): the one format that training, FID and caching share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from skipsearch.errors import UserError


def digits(resolution: int = 16, classes: tuple[int, ...] | None = None) -> torch.Tensor:
    """scikit-learn's 1,797 8x8 digits (values 0..16), upsampled bilinearly and quantised to uint8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    if classes is not None:
        images = images[torch.from_numpy(np.isin(bunch.target, classes))]
    if resolution != 8:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def digit_labels() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().target.astype(np.int64))


DATASETS: dict[str, Callable[..., torch.Tensor]] = {"digits": digits}


def load(name: str, **kwargs) -> torch.Tensor:
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](**kwargs)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the networks are trained in."""
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, rounding as EDM's generate.py does."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def content_hash(images: torch.Tensor) -> str:
    """Hash of the pixels and the shape, so a changed data set never reuses stale statistics."""
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(str(images.dtype).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
