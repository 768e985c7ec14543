"""The embedded family: small SkipUNets shipped in ``skipsearch/weights``, wrapped in EDM preconditioning.

- ``embedded-digits``: the default; trained on scikit-learn's digits at 16x16 (``skipsearch.training.embedded``);
- ``digits-0to4``: the Diff-Tuning demo's pre-trained model, the same UNet made class-conditional (10 digit
  labels plus the null label) and trained on digits 0-4 only;
- ``fashion-mnist-unet``: a 6.5 M-parameter UNet trained on Fashion-MNIST at 32x32 (``skipsearch.training.fashion``).

One long skip per resolution level: decoder block j receives skip k - j as its own argument (``ArgumentSkip``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from skipsearch.data import DIGIT_SUBSETS
from skipsearch.diffusion.preconditioning import EDMPrecond
from skipsearch.files import file_hash
from skipsearch.hooks import ArgumentSkip, SkipPoint
from skipsearch.models.base import Family, LoadedModel, ModelInfo, SkipInfo
from skipsearch.models.skipunet import SkipUNet
from skipsearch.safeload import state_dict


@dataclass(frozen=True, kw_only=True)
class Shipped:
    """A shipped SkipUNet: its architecture, weights file, training data and training recipe."""

    weights: str
    channels: tuple[int, ...]
    emb_channels: int
    resolution: int
    reference: str
    num_classes: int = 0
    classes: tuple[int, ...] = ()
    training: dict = field(default_factory=dict)  # what the training script used (steps, batch, lr, ...)

    def build(self) -> EDMPrecond:
        return EDMPrecond(SkipUNet(1, self.channels, self.emb_channels, self.num_classes))

    def path(self) -> Path:
        with resources.as_file(resources.files("skipsearch.weights") / self.weights) as path:
            return Path(path)


SHIPPED: dict[str, Shipped] = {
    "embedded-digits": Shipped(weights="digits_unet.pt", channels=(16, 32, 64), emb_channels=64, resolution=16,
                               reference="digits", training={"steps": 12000}),
    "digits-0to4": Shipped(weights="digits04_unet.pt", channels=(16, 32, 64), emb_channels=64, resolution=16,
                           reference="digits-0to4", num_classes=10, classes=DIGIT_SUBSETS["digits-0to4"],
                           training={"steps": 5000, "label_dropout": 0.1}),
    "fashion-mnist-unet": Shipped(weights="fashion_unet.pt", channels=(64, 128, 256), emb_channels=256,
                                  resolution=32, reference="fashion-mnist",
                                  training={"steps": 24000, "batch": 256, "lr": 6e-4, "warmup": 1000,
                                            "ema": 0.9995}),
}


def _skips(levels: int) -> tuple[SkipInfo, ...]:
    """Skip i (level i) is consumed by decoder block levels - 1 - i: the decoder pops innermost first."""
    return tuple(SkipInfo(index=i, level=i, path=f"net.dec.{levels - 1 - i}") for i in range(levels))


class EmbeddedFamily(Family):
    name = "embedded"

    def models(self) -> Mapping[str, Callable[[], LoadedModel]]:
        return {name: functools.partial(self.load, name) for name in SHIPPED}

    def info(self, model: str) -> ModelInfo:
        s = SHIPPED[model]
        return ModelInfo(model_id=model, family=self.name, weights_hash=file_hash(s.path()), img_channels=1,
                         resolution=s.resolution, skips=_skips(len(s.channels)), reference=s.reference,
                         num_classes=s.num_classes, classes=s.classes)

    def load(self, model: str) -> LoadedModel:
        """Weights shipped fp32 or fp16 on disk, loaded without code; a fresh copy each call."""
        s = SHIPPED[model]
        denoiser = s.build()
        state = state_dict(s.path(), f"the shipped weights of {model}")
        denoiser.net.load_state_dict({k: v.float() for k, v in state.items()})
        denoiser.eval().requires_grad_(False)
        return LoadedModel(denoiser, self.info(model))

    def matches(self, denoiser: nn.Module) -> bool:
        return isinstance(denoiser, EDMPrecond) and isinstance(denoiser.net, SkipUNet)

    def skip_points(self, denoiser: nn.Module) -> list[SkipPoint]:
        levels = denoiser.net.levels
        return [ArgumentSkip(index=s.index, level=s.level, module=denoiser.net.dec[levels - 1 - s.index],
                             path=s.path, position=1, keyword="skip") for s in _skips(levels)]

    def sigma_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        sigma = kwargs["sigma"] if "sigma" in kwargs else args[1]
        return torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
