"""The embedded family: small SkipUNets shipped in ``skipsearch/weights``, wrapped in EDM preconditioning.

- ``embedded-digits``: the default; trained on scikit-learn's digits at 16x16 (``skipsearch.training.embedded``);
- ``digits-0to4``: the Diff-Tuning demo's pre-trained model, the same UNet made class-conditional (10 digit
  labels plus the null label) and trained on digits 0-4 only;
- ``fashion-mnist-unet``: a 6.5 M-parameter UNet trained on Fashion-MNIST at 32x32 (``skipsearch.training.fashion``).

One long skip per resolution level: decoder block j receives skip k - j as its own argument (``ArgumentSkip``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from skipsearch.errors import FieldError
from skipsearch.files import file_hash
from skipsearch.models.family import Family, LoadedModel, ModelInfo, ModelSection, SkipInfo
from skipsearch.subsets import DIGIT_SUBSETS

if TYPE_CHECKING:  # the network's modules are imported where one is built or hooked: parsing a spec needs none
    from torch import nn

    from skipsearch.diffusion.preconditioning import EDMPrecond
    from skipsearch.hooks import SkipPoint
    from skipsearch.hooks.scaling import SigmaOf


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
        from skipsearch.diffusion.preconditioning import EDMPrecond
        from skipsearch.models.skipunet import SkipUNet

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


class EmbeddedModel(ModelSection):
    """``model: {name: embedded-digits}``: a model shipped with skipsearch (``family: embedded`` may be left out)."""

    family: Literal["embedded"] = "embedded"
    name: str = Field("embedded-digits", min_length=1, max_length=200)

    @property
    def model_id(self) -> str:
        return self.name


class EmbeddedFamily(Family):
    name = "embedded"
    spec_class = EmbeddedModel

    def choices(self) -> tuple[str, ...]:
        return tuple(SHIPPED)

    def _shipped(self, spec: EmbeddedModel) -> Shipped:
        if spec.name not in SHIPPED:
            raise FieldError("name", f"unknown model {spec.name[:60]!r}; valid: {', '.join(sorted(SHIPPED))} (or "
                                     f"a family: diffusers, edm or hooked, with where the model is)")
        return SHIPPED[spec.name]

    def lookup(self, spec: EmbeddedModel) -> None:
        self._shipped(spec)

    def info(self, spec: EmbeddedModel) -> ModelInfo:
        s = self._shipped(spec)
        return ModelInfo(model_id=spec.name, family=self.name, weights_hash=file_hash(s.path()), img_channels=1,
                         resolution=s.resolution, skips=_skips(len(s.channels)), reference=s.reference,
                         num_classes=s.num_classes, classes=s.classes)

    def load(self, spec: EmbeddedModel) -> LoadedModel:
        """Weights shipped fp32 or fp16 on disk, loaded without code; a fresh copy each call."""
        from skipsearch.safeload import state_dict

        s = self._shipped(spec)
        denoiser = s.build()
        state = state_dict(s.path(), f"the shipped weights of {spec.name}")
        denoiser.net.load_state_dict({k: v.float() for k, v in state.items()})
        denoiser.eval().requires_grad_(False)
        return LoadedModel(denoiser, self.info(spec))

    def matches(self, model: Any) -> bool:
        from skipsearch.diffusion.preconditioning import EDMPrecond
        from skipsearch.models.skipunet import SkipUNet

        return isinstance(model, EDMPrecond) and isinstance(model.net, SkipUNet)

    def skip_points(self, model: nn.Module) -> list[SkipPoint]:
        from skipsearch.hooks import ArgumentSkip

        levels = model.net.levels
        return [ArgumentSkip(index=s.index, level=s.level, module=model.net.dec[levels - 1 - s.index],
                             path=s.path, position=1, keyword="skip") for s in _skips(levels)]

    def sigma_of(self, model: nn.Module) -> SigmaOf:
        from skipsearch.hooks.scaling import sigma_argument

        return sigma_argument(1)

