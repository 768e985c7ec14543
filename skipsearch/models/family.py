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
from typing import TYPE_CHECKING, Any, ClassVar

from skipsearch.errors import UserError
from skipsearch.fields import Section
from skipsearch.modelfacts import ModelInfo, SkipInfo  # noqa: F401 (the families import SkipInfo from here)

if TYPE_CHECKING:  # torch where a network is handled: a spec's model section, which readers parse, needs none
    from torch import nn

    from skipsearch.hooks import SkipPoint
    from skipsearch.hooks.scaling import SigmaOf

MODEL_ID_MAX = 128  # the database column that stores a model's id


class ModelSection(Section):
    """A spec's ``model:`` section; each family declares its own with ``family: Literal[<name>]``."""

    family: str

    @property
    def model_id(self) -> str:
        """The model's name in stored results and tables (at most ``MODEL_ID_MAX`` characters)."""
        raise NotImplementedError


# ``SkipInfo`` and ``ModelInfo`` are plain data in ``skipsearch.modelfacts`` (readers need them without torch)


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
    from torch import nn

    from skipsearch.safeload import content_digest

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

    def missing_network(self, spec: ModelSection) -> str | None:
        """For a section that names a network handed over in memory (no file holds it) when none was handed over
        in this process: what a user would pass as ``model=`` (``pipe``, ``net``), for the message saying where
        to do so; None for a section that finds its model itself, or whose network is here."""
        return None

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
