"""The ``model:`` section of the diffusers family: a UNet or pipeline folder, or a name for one handed over in
memory, with its prompts. Pydantic only: the family (``diffusers_unet``) and where its parts come from
(``diffusers_parts``) both read it, and neither imports the other for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from skipsearch.fields import OptionalFilePath
from skipsearch.models.family import MODEL_ID_MAX, ModelSection


class DiffusersModel(ModelSection):
    """``model:`` for a diffusers UNet or pipeline folder."""

    operational = frozenset({"name"})
    family: Literal["diffusers"] = "diffusers"
    path: OptionalFilePath = None  # None: a network handed over by the Python API
    subfolder: str | None = Field(None, min_length=1, max_length=200)  # default: unet, in a pipeline folder
    name: str | None = Field(None, min_length=1, max_length=MODEL_ID_MAX)  # default: the folder's name
    prediction_type: Literal["epsilon", "v_prediction", "sample"] | None = None  # default: the scheduler config's
    prompts: OptionalFilePath = None
    prompt_embeds: OptionalFilePath = None
    negative_prompt: str = Field("", max_length=10_000)
    trust_pickles: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> DiffusersModel:
        if self.prompts and self.prompt_embeds:
            raise ValueError("give prompts or prompt_embeds, not both")
        if self.path is None and self.name is None:
            raise ValueError("give path (a UNet or pipeline folder), or name for a UNet or pipeline handed over "
                             "with skipsearch.run(spec, model=...)")
        if self.path is None and (self.subfolder or self.trust_pickles):
            raise ValueError("subfolder and trust_pickles describe a folder; this section has no path")
        return self

    @property
    def model_id(self) -> str:
        return (self.name or Path(self.path).name or self.path)[:MODEL_ID_MAX]  # type: ignore[arg-type]
