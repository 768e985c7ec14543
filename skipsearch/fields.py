"""Bounded field types and the base of every spec section, shared by the spec, the model families' own
sections and the provenance schema. Light (pydantic only), so model families can declare their sections
without importing the spec, which imports them.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

SEED_MAX = 2**31 - 1  # seeds and seed + count stay below this (32-bit database columns)
N_MAX = 1_000_000  # samples per evaluation
BATCH_MAX = 65_536
TRIALS_MAX = 100_000
STEPS_MAX = 10_000_000  # fine-tuning steps
TIMEOUT_MAX = 7 * 24 * 3600.0

SIGMA_LIMIT = 1e4  # noise levels above this are not an EDM-style schedule
RHO_MAX = 10.0  # a skip scaled beyond 10x is no longer a tuning; files and specs are refused above it

Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Count = Annotated[int, Field(gt=0, le=N_MAX)]
Batch = Annotated[int, Field(gt=0, le=BATCH_MAX)]
Rho = Annotated[float, Field(gt=0, le=RHO_MAX)]
Sigma = Annotated[float, Field(gt=0, le=SIGMA_LIMIT)]
Rate = Annotated[float, Field(gt=0, le=1)]  # learning rate
Steps = Annotated[int, Field(ge=1, le=STEPS_MAX)]  # training steps


class Section(BaseModel):
    """A spec section. ``operational`` names its fields that do not change a trial's numbers (budgets,
    seeds of the proposals, names, where things are stored); every other field decides the numbers, so a
    study refuses to change it (``science``). A new field is therefore checked unless declared here."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    operational: ClassVar[frozenset[str]] = frozenset()
