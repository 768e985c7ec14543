"""Study specs: one YAML file per study, every field validated, every error naming its field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError
from pydantic import model_validator

from skipsearch.errors import UserError
from skipsearch.generate import SamplerConfig
from skipsearch.skip import FAMILIES

DEFAULT_STORAGE = "sqlite:///skipsearch.db"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    name: str = "embedded-digits"


class SamplerSpec(_Section):
    name: Literal["heun", "euler"] = "heun"
    steps: int = Field(10, ge=1, le=1000)
    sigma_min: PositiveFloat = 0.002
    sigma_max: PositiveFloat = 80.0
    rho: PositiveFloat = 7.0

    @model_validator(mode="after")
    def _range(self) -> SamplerSpec:
        if self.sigma_min >= self.sigma_max:
            raise ValueError("sigma_min must be below sigma_max")
        return self

    def config(self) -> SamplerConfig:
        return SamplerConfig(self.name, self.steps, self.sigma_min, self.sigma_max, self.rho)


class MetricSpec(_Section):
    extractor: str = "skipsearch-digits"
    reference: str = "digits"
    n: PositiveInt = 500
    rungs: tuple[PositiveInt, ...] = ()  # smaller N reported first, e.g. [64, 256] below n = 1024
    seed: NonNegativeInt = 0
    batch_size: PositiveInt = 500
    kid_subset_size: PositiveInt = 100

    @model_validator(mode="after")
    def _ladder(self) -> MetricSpec:
        ladder = [*self.rungs, self.n]
        if any(b <= a for a, b in zip(ladder, ladder[1:])):
            raise ValueError(f"rungs must increase and stay below n: got rungs {list(self.rungs)} with n {self.n}")
        ratios = {b / a for a, b in zip(ladder, ladder[1:])}
        if len(ratios) > 1 or any(r != int(r) for r in ratios):
            raise ValueError(f"rungs and n must grow by one constant whole factor (as ASHA's milestones do), "
                             f"got {ladder}")
        return self

    @property
    def reduction_factor(self) -> int | None:
        return self.n // self.rungs[-1] if self.rungs else None


class SearchSpec(_Section):
    family: Literal[FAMILIES] = "linear"  # type: ignore[valid-type]
    trials: PositiveInt = 30
    rho_range: tuple[PositiveFloat, PositiveFloat] = (0.5, 1.5)
    sigma_range: tuple[PositiveFloat, PositiveFloat] = (0.002, 80.0)
    sampler: Literal["tpe", "random", "gp"] = "tpe"
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _ranges(self) -> SearchSpec:
        lo, hi = self.rho_range
        if not lo < 1.0 < hi:
            raise ValueError(f"rho_range must contain 1 strictly inside (the baseline), got [{lo}, {hi}]")
        if self.sigma_range[0] >= self.sigma_range[1]:
            raise ValueError("sigma_range must be increasing")
        return self


class ConfirmSpec(_Section):
    top_k: NonNegativeInt = 3
    n: PositiveInt = 2000
    seed_sets: PositiveInt = 3
    seed: NonNegativeInt = 1_000_000


class Spec(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["skip_tuning"] = "skip_tuning"
    description: str = ""
    storage: str = DEFAULT_STORAGE
    device: Literal["cpu", "cuda", "auto"] = "auto"
    model: ModelSpec = ModelSpec()
    sampler: SamplerSpec = SamplerSpec()
    metric: MetricSpec = MetricSpec()
    search: SearchSpec = SearchSpec()
    confirm: ConfirmSpec = ConfirmSpec()

    @model_validator(mode="after")
    def _disjoint_seeds(self) -> Spec:
        search_end = self.metric.seed + self.metric.n
        confirm_end = self.confirm.seed + self.confirm.n * self.confirm.seed_sets
        if self.confirm.seed < search_end and self.metric.seed < confirm_end:
            raise ValueError(f"confirm seeds [{self.confirm.seed}, {confirm_end}) overlap the search seeds "
                             f"[{self.metric.seed}, {search_end}); held-out seeds must be new")
        return self


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid spec"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        reason = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        quiet = e["type"] in ("extra_forbidden", "missing", "value_error")
        shown = "" if quiet else f" (got {e.get('input')!r})"
        lines.append(f"  {field}: {reason}{shown}")
    return "\n".join(lines)


def parse_spec(raw: object, source: str = "spec") -> Spec:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a spec must be a YAML mapping, got {type(raw).__name__}")
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(source, err)) from None


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    return parse_spec(raw, str(path))
