"""Model registry: a name -> a loaded denoiser D(x, sigma) and the facts that make its results reproducible."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from skipsearch.data import DIGIT_SUBSETS
from skipsearch.errors import UserError
from skipsearch.networks import EDMPrecond, SkipUNet

DIGITS_UNET_WEIGHTS = "digits_unet.pt"
DIGITS_UNET_CONFIG = {"channels": (16, 32, 64), "emb_channels": 64, "resolution": 16, "train_steps": 12000}
# The Diff-Tuning demo's pre-trained model: the same UNet trained on digits 0-4 only; 5-9 are its new domain.
SOURCE_CLASSES = DIGIT_SUBSETS["digits-0to4"]
SOURCE_UNET_WEIGHTS = "digits04_unet.pt"
SOURCE_UNET_CONFIG = DIGITS_UNET_CONFIG | {"train_steps": 5000, "num_classes": 10, "label_dropout": 0.1}


@dataclass(frozen=True)
class ModelInfo:
    """What a stored result needs to name the model it came from."""

    model_id: str
    weights_hash: str
    img_channels: int
    resolution: int
    n_skips: int
    reference: str  # the data set the model was trained on, the FID reference by default
    num_classes: int = 0  # > 0: class-conditional, with label num_classes as the null (unconditional) label
    classes: tuple[int, ...] = ()  # the labels it was trained on (a conditional model's source classes)


@dataclass
class LoadedModel:
    denoiser: EDMPrecond
    info: ModelInfo


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def build_digits_unet(num_classes: int = 0) -> EDMPrecond:
    cfg = DIGITS_UNET_CONFIG
    return EDMPrecond(SkipUNet(1, cfg["channels"], cfg["emb_channels"], num_classes))


def _shipped(model_id: str, denoiser: EDMPrecond, weights: str, config: dict, reference: str,
             classes: tuple[int, ...] = ()) -> LoadedModel:
    """Load weights shipped in skipsearch/weights (fp32 or fp16 on disk) safely, with their hash."""
    with resources.as_file(resources.files("skipsearch.weights") / weights) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
        digest = file_hash(path)
    denoiser.net.load_state_dict({k: v.float() for k, v in state.items()})
    denoiser.eval().requires_grad_(False)
    info = ModelInfo(model_id, digest, 1, config["resolution"], len(config["channels"]), reference,
                     config.get("num_classes", 0), classes)
    return LoadedModel(denoiser, info)


def _embedded_digits() -> LoadedModel:
    return _shipped("embedded-digits", build_digits_unet(), DIGITS_UNET_WEIGHTS, DIGITS_UNET_CONFIG, "digits")


def _digits_0to4() -> LoadedModel:
    """The Diff-Tuning demo's pre-trained model: the embedded UNet, class-conditional over the 10 digit labels
    (plus the null label), trained on digits 0-4 only; labels 5-9 are untrained until fine-tuning."""
    return _shipped("digits-0to4", build_digits_unet(SOURCE_UNET_CONFIG["num_classes"]), SOURCE_UNET_WEIGHTS,
                    SOURCE_UNET_CONFIG, "digits-0to4", SOURCE_CLASSES)


def _fashion_mnist_unet() -> LoadedModel:
    """The 6.5 M-parameter UNet trained on Fashion-MNIST at 32x32 (skipsearch/train_fashion.py), fp16 on disk."""
    from skipsearch.train_fashion import FASHION_UNET_CONFIG, FASHION_UNET_WEIGHTS, build_fashion_unet

    return _shipped("fashion-mnist-unet", build_fashion_unet(), FASHION_UNET_WEIGHTS, FASHION_UNET_CONFIG,
                    "fashion-mnist")


MODELS: dict[str, Callable[[], LoadedModel]] = {"embedded-digits": _embedded_digits, "digits-0to4": _digits_0to4,
                                               "fashion-mnist-unet": _fashion_mnist_unet}


def load_model(name: str) -> LoadedModel:
    """A fresh copy each call: Skip-Tuning hooks on one copy never touch another."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]()
