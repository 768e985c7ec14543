"""Every kind of searched coefficients, told apart by ``family``: Skip-Tuning schedules and Diff-Tuning weights."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, Field, TypeAdapter

from skipsearch.difftuning import DiffTuningWeights
from skipsearch.skip import SkipSchedule

Coefficients = Annotated[Union[SkipSchedule, DiffTuningWeights], Field(discriminator="family")]
ADAPTER = TypeAdapter(Coefficients)


def parse(text: str) -> BaseModel:
    """Coefficients from their JSON form, as the database stores them."""
    return ADAPTER.validate_json(text)


def kind_of(coefficients: BaseModel) -> str:
    return "diff_tuning" if isinstance(coefficients, DiffTuningWeights) else "skip_tuning"
