"""The model-family registry: a spec's ``model:`` section -> its family, which loads it and knows its skips.

To add a family, write one module beside ``embedded.py`` with a ``Family`` subclass and its ``ModelSection``,
and add an instance to ``FAMILIES``. Nothing outside ``models/`` and ``hooks/`` names a family. Family modules
import their heavy libraries (diffusers, NVlabs' code) where they load a model, so this registry is light.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from skipsearch.errors import UserError
from skipsearch.models.family import Family, LoadedModel, ModelInfo, ModelSection, SkipInfo
from skipsearch.models.diffusers_unet import DiffusersFamily
from skipsearch.models.edm_nvlabs import NVlabsFamily
from skipsearch.models.embedded_family import EmbeddedFamily, EmbeddedModel
from skipsearch.models.hooked import HookedFamily

FAMILIES: tuple[Family, ...] = (EmbeddedFamily(), DiffusersFamily(), NVlabsFamily(), HookedFamily())
BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
DEFAULT_FAMILY = "embedded"  # a model section without ``family``: one of the shipped models, by name

__all__ = ["BY_NAME", "FAMILIES", "Family", "LoadedModel", "ModelInfo", "ModelSection", "ModelSpec", "SkipInfo",
           "as_section", "family_for", "family_of", "load_model", "model_info"]


def _family_tag(value: Any) -> str:
    return value.get("family", DEFAULT_FAMILY) if isinstance(value, dict) else getattr(value, "family", "")


ModelSpec = Annotated[Union[tuple(Annotated[f.spec_class, Tag(f.name)] for f in FAMILIES)],  # type: ignore[misc]
                      Discriminator(_family_tag, custom_error_type="family",
                                    custom_error_message=f"family must be one of {', '.join(BY_NAME)}")]


def as_section(model: str | ModelSection) -> ModelSection:
    """A model section; a plain name means a shipped (embedded) model, as specs before families had it."""
    return EmbeddedModel(name=model) if isinstance(model, str) else model


def family_for(model: str | ModelSection) -> Family:
    return BY_NAME[as_section(model).family]


def load_model(model: str | ModelSection) -> LoadedModel:
    """A fresh copy each call: hooks or fine-tuning on one copy never touch another."""
    section = as_section(model)
    return BY_NAME[section.family].load(section)


def model_info(model: str | ModelSection) -> ModelInfo:
    """The model's facts (skips, resolution, conditioning, weights hash) without loading its network."""
    section = as_section(model)
    return BY_NAME[section.family].info(section)


def family_of(model: Any) -> Family:
    """The family a loaded model belongs to (a user's own model or pipeline, in ``apply``)."""
    for family in (BY_NAME["hooked"], *FAMILIES):  # a module declared with its skips is taken at its word
        if family.matches(model):
            return family
    raise UserError(f"no model family recognises {type(model).__name__}; supported: the embedded SkipUNet, "
                    f"diffusers UNet2DModel / UNet2DConditionModel and their pipelines, NVlabs EDM SongUNet / "
                    f"DhariwalUNet, and any module through skipsearch.models.hooked (HookedModel)")
