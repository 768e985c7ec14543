"""Bounded field types and the base of every spec section, shared by the spec, the model families' own
sections and the provenance schema. Light (pydantic only), so model families can declare their sections
without importing the spec, which imports them.

Fields that hold a path are typed ``FilePath``, ``OutputFolder`` or ``DataName``: ``Section.anchored`` makes
every such path absolute by one rule (``skipsearch.paths``), and ``Section.paths`` lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from skipsearch.paths import DATA, INPUT, OUTPUT, PathMarker, SpecPath

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
PATH_MAX = 4096
FilePath = Annotated[str, Field(min_length=1, max_length=PATH_MAX), INPUT]  # a file or folder that is read
OutputFolder = Annotated[str, Field(min_length=1, max_length=PATH_MAX), OUTPUT]  # a folder that is written
DataName = Annotated[str, Field(min_length=1, max_length=PATH_MAX), DATA]  # a data set: a name or KIND:PATH
OptionalFilePath = Annotated[str | None, Field(min_length=1, max_length=PATH_MAX), INPUT]


class Section(BaseModel):
    """A spec section. ``operational`` names its fields that do not change a trial's numbers (budgets,
    seeds of the proposals, names, where things are stored); every other field decides the numbers, so a
    study refuses to change it (``science``). A new field is therefore checked unless declared here."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    operational: ClassVar[frozenset[str]] = frozenset()

    def anchored(self, base: Path, defaults: Path | None = None) -> Self:
        """This section with every path field made absolute: what it was given from ``base`` (a spec file's
        folder), what it left at its default from ``defaults`` (the working directory; ``base`` when None).
        Absolute paths are only normalised, so anchoring twice changes nothing."""
        defaults = base if defaults is None else defaults
        update: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value, at = getattr(self, name), base if name in self.model_fields_set else defaults
            if isinstance(value, Section):
                new = value.anchored(at, defaults)
            elif isinstance(value, str) and (marker := _marker(info)) is not None:
                new = marker.anchor(value, at)
            else:
                continue
            if new != value:
                update[name] = new
        return self.model_copy(update=update) if update else self

    def paths(self, prefix: str = "") -> list[SpecPath]:
        """Every path this section names, by dotted field name (built-in data sets and unset fields name none)."""
        out: list[SpecPath] = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, Section):
                out += value.paths(f"{prefix}{name}.")
            elif isinstance(value, str) and (marker := _marker(info)) is not None:
                if (path := marker.path_in(value)) is not None:
                    out.append(SpecPath(f"{prefix}{name}", path, output=marker.role == "output"))
        return out


def _marker(info: FieldInfo) -> PathMarker | None:
    return next((m for m in info.metadata if isinstance(m, PathMarker)), None)
