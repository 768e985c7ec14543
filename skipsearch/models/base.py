"""What every model family provides: its spec section, a loaded denoiser, a cheap ``ModelInfo``, and where
its skips are.

A family serves a spec's ``model:`` section (``ModelSection``, told apart by ``family``). ``ModelInfo`` is
what the driver, the search space and stored results need to know about a model (channels, resolution,
conditioning, its skips with their depth, the hash of its weights); a family gets it without building a
feature extractor or a reference, so a driver that only proposes coefficients never builds an evaluator.

A loaded model's ``denoiser`` follows EDM's convention, D(x, sigma[, class_labels]) -> denoised x, whatever the
network predicts (the family wraps it), so skipsearch's EDM samplers run on every family. Families whose
networks come with their own schedulers (diffusers) also say how to sample through them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from skipsearch.errors import UserError
from skipsearch.fields import Section
from skipsearch.hooks import SkipPoint
from skipsearch.hooks.scaling import SigmaOf
from skipsearch.safeload import content_digest

MODEL_ID_MAX = 128  # the database column that stores a model's id


class ModelSection(Section):
    """A spec's ``model:`` section; each family declares its own with ``family: Literal[<name>]``."""

    family: str

    @property
    def model_id(self) -> str:
        """The model's name in stored results and tables (at most ``MODEL_ID_MAX`` characters)."""
        raise NotImplementedError

    def anchored(self, base: Path) -> ModelSection:
        """The section with its relative paths taken from ``base`` (the spec file's folder)."""
        return self


@dataclass(frozen=True, kw_only=True)
class SkipInfo:
    """A skip as stored and exported: its index (0 = outermost), resolution level (0 = highest) and the
    path of the module that consumes it."""

    index: int
    level: int
    path: str


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What a stored result needs to name the model it came from, and what a search space needs of it."""

    model_id: str
    family: str
    weights_hash: str
    img_channels: int
    resolution: int
    skips: tuple[SkipInfo, ...]
    reference: str  # the data set the model was trained on, the FID reference by default
    num_classes: int = 0  # > 0: class-conditional, with label num_classes as the null (unconditional) label
    classes: tuple[int, ...] = ()  # the labels it was trained on (a conditional model's source classes)
    conditions: tuple[int, ...] = ()  # the conditions a trial samples by default (seed s: conditions[s % len])
    noise_shape: tuple[int, ...] = ()  # the sampler's state per sample (a latent model's latents); () = image
    schedulers: bool = False  # whether diffusers' schedulers can drive it (sampler.name ddim, ...)
    guidance: bool = False  # whether it has an unconditional input for classifier-free guidance
    sigma_range: tuple[float, float] | None = None  # the noise levels it was trained on, where finite
    freeu: bool = False  # whether diffusers' FreeU can be switched on it

    @property
    def n_skips(self) -> int:
        return len(self.skips)

    @property
    def n_levels(self) -> int:
        return len({s.level for s in self.skips})

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample's initial noise."""
        return self.noise_shape or (self.img_channels, self.resolution, self.resolution)


@dataclass
class LoadedModel:
    denoiser: nn.Module  # D(x, sigma[, class_labels]), EDM's convention; what methods apply coefficients to
    info: ModelInfo


@dataclass(frozen=True)
class Handed:
    """A user's network handed over in this process (``skipsearch.run(spec, model=...)``), with the content
    digests of its parts taken then, so that naming its weights never re-reads them."""

    model: Any
    digests: dict[str, str]  # part -> content digest of its state dict


_HANDED: dict[tuple[str, str], Handed] = {}  # (family, model name) -> what was handed over


def keep_handed(family: str, name: str, model: Any, parts: dict[str, Any]) -> Handed:
    """Keep ``model`` for ``family``'s sections named ``name``; ``parts`` (the modules among them) are digested."""
    digests = {k: content_digest(m.state_dict()) for k, m in parts.items() if isinstance(m, nn.Module)}
    _HANDED[(family, name)] = handed = Handed(model, digests)
    return handed


def handed(family: str, name: str) -> Handed | None:
    return _HANDED.get((family, name))


class Family(ABC):
    """A kind of model: its spec section, how to load it, and where its skips are."""

    name: ClassVar[str]
    spec_class: ClassVar[type[ModelSection]]

    @abstractmethod
    def info(self, spec: ModelSection) -> ModelInfo:
        """The model's facts without loading its weights; a spec that names nothing usable raises UserError."""

    @abstractmethod
    def load(self, spec: ModelSection) -> LoadedModel:
        """A fresh copy each call: hooks or fine-tuning on one copy never touch another."""

    def lookup(self, spec: ModelSection) -> None:  # noqa: B027 (a family with nothing to look up keeps this)
        """The cheap check of a model section (a name in the registry, a folder that exists); UserError if not."""

    def hand_over(self, spec: ModelSection, model: Any) -> None:
        """Take the user's own network for ``spec`` (``skipsearch.run(spec, model=...)``) in this process."""
        raise UserError(f"model= hands over a network for a spec whose model section is family hooked or diffusers "
                        f"(without a path); this spec's model is family {self.name}")

    def choices(self) -> tuple[str, ...]:
        """Names this family serves without a path (the embedded models), for error messages."""
        return ()

    @abstractmethod
    def matches(self, model: Any) -> bool:
        """Whether a model (the user's own, in ``apply``: a module, or a pipeline) is one of this family's."""

    @abstractmethod
    def skip_points(self, model: Any) -> list[SkipPoint]:
        """The model's skips, outermost first, with the modules that consume them."""

    def hook_root(self, model: Any) -> nn.Module:
        """The module whose every call is one network evaluation, carrying the noise level."""
        return model

    @abstractmethod
    def sigma_of(self, model: Any) -> SigmaOf:
        """Reads sigma (float64, shape (B,) or (1,)) from the arguments of a call to ``hook_root(model)``."""

    def freeu_target(self, model: Any) -> Any:
        """The module whose ``enable_freeu``/``disable_freeu`` switch FreeU on this model."""
        raise UserError(f"FreeU needs a diffusers UNet with enable_freeu (UNet2DConditionModel); the {self.name} "
                        f"family has none")
