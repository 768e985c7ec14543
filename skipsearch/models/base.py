"""What every model family provides: a loaded denoiser D(x, sigma, **cond), and a cheap ``ModelInfo``.

``ModelInfo`` is what the driver, the search space and stored results need to know about a model
(channels, resolution, conditioning, its skips with their depth, the hash of its weights). A family gets
it without building a feature extractor or a reference, so a driver that only proposes coefficients never
builds an evaluator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from skipsearch.hooks import SkipPoint


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

    @property
    def n_skips(self) -> int:
        return len(self.skips)

    @property
    def n_levels(self) -> int:
        return len({s.level for s in self.skips})


@dataclass
class LoadedModel:
    denoiser: nn.Module  # D(x, sigma[, class_labels])
    info: ModelInfo


class Family(ABC):
    """A kind of model: which names it serves, how to load them, and where their skips are."""

    name: ClassVar[str]

    @abstractmethod
    def models(self) -> Mapping[str, Callable[[], LoadedModel]]:
        """The model names this family serves, each with its loader (a fresh copy per call)."""

    @abstractmethod
    def info(self, model: str) -> ModelInfo:
        """The model's facts without loading its network."""

    @abstractmethod
    def matches(self, denoiser: nn.Module) -> bool:
        """Whether a loaded denoiser (the user's own, in ``apply``) is one of this family's."""

    @abstractmethod
    def skip_points(self, denoiser: nn.Module) -> list[SkipPoint]:
        """The denoiser's skips, outermost first, with the modules that consume them."""

    @abstractmethod
    def sigma_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """Sigma from the arguments of a call to the denoiser, as float64 of shape (B,) or (1,)."""
