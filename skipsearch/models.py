"""Model registry: a name -> a loaded denoiser D(x, sigma) and the facts that make its results reproducible."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from skipsearch.errors import UserError
from skipsearch.networks import EDMPrecond, SkipUNet

DIGITS_UNET_WEIGHTS = "digits_unet.pt"
DIGITS_UNET_CONFIG = {"channels": (16, 32, 64), "emb_channels": 64, "resolution": 16, "train_steps": 12000}


@dataclass(frozen=True)
class ModelInfo:
    """What a stored result needs to name the model it came from."""

    model_id: str
    weights_hash: str
    img_channels: int
    resolution: int
    n_skips: int
    reference: str  # the data set the model was trained on, the FID reference by default


@dataclass
class LoadedModel:
    denoiser: EDMPrecond
    info: ModelInfo


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def build_digits_unet() -> EDMPrecond:
    cfg = DIGITS_UNET_CONFIG
    return EDMPrecond(SkipUNet(1, cfg["channels"], cfg["emb_channels"]))


def _embedded_digits() -> LoadedModel:
    denoiser = build_digits_unet()
    with resources.as_file(resources.files("skipsearch.weights") / DIGITS_UNET_WEIGHTS) as path:
        denoiser.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        digest = file_hash(path)
    denoiser.eval().requires_grad_(False)
    info = ModelInfo("embedded-digits", digest, 1, DIGITS_UNET_CONFIG["resolution"],
                     len(DIGITS_UNET_CONFIG["channels"]), "digits")
    return LoadedModel(denoiser, info)


MODELS: dict[str, Callable[[], LoadedModel]] = {"embedded-digits": _embedded_digits}


def load_model(name: str) -> LoadedModel:
    """A fresh copy each call: Skip-Tuning hooks on one copy never touch another."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]()
