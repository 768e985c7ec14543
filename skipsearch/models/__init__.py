"""The model-family registry: a model name -> its family, which loads it and knows its skips.

To add a family, write one module beside ``embedded.py`` with a ``Family`` subclass and add an instance to
``FAMILIES``. Nothing outside ``models/`` and ``hooks/`` names a family.
"""

from __future__ import annotations

from torch import nn

from skipsearch.errors import UserError
from skipsearch.models.base import Family, LoadedModel, ModelInfo, SkipInfo
from skipsearch.models.embedded import EmbeddedFamily

FAMILIES: tuple[Family, ...] = (EmbeddedFamily(),)
MODELS: dict[str, Family] = {name: family for family in FAMILIES for name in family.models()}

__all__ = ["FAMILIES", "MODELS", "Family", "LoadedModel", "ModelInfo", "SkipInfo", "family_of", "load_model",
           "model_info"]


def _family(name: str) -> Family:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def load_model(name: str) -> LoadedModel:
    """A fresh copy each call: hooks or fine-tuning on one copy never touch another."""
    return _family(name).models()[name]()


def model_info(name: str) -> ModelInfo:
    """The model's facts (skips, resolution, conditioning, weights hash) without loading its network."""
    return _family(name).info(name)


def family_of(denoiser: nn.Module) -> Family:
    """The family a loaded denoiser belongs to (a user's own model in ``apply``)."""
    for family in FAMILIES:
        if family.matches(denoiser):
            return family
    raise UserError(f"no model family recognises {type(denoiser).__name__}; supported: "
                    f"{', '.join(f.name for f in FAMILIES)}")
