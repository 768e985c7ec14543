"""Study specs: one YAML file per study, every field validated, every error naming its field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, model_validator)

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


class DiffSearchSpec(_Section):
    """Ranges of the Diff-Tuning weights; a range given as one number fixes that weight."""

    trials: PositiveInt = 20
    s_range: tuple[NonNegativeFloat, NonNegativeFloat] = (0.0, 3.0)  # reconsolidation exponent s
    s_prime_range: tuple[NonNegativeFloat, NonNegativeFloat] = (0.0, 3.0)  # retention exponent s'
    r_range: tuple[NonNegativeFloat, float] = (0.0, 0.5)  # bank fraction of each batch
    lam_range: tuple[PositiveFloat, PositiveFloat] = (0.01, 1.0)  # retention weight (log scale)
    lr_range: tuple[PositiveFloat, PositiveFloat] | None = None  # None: finetune.lr for every trial
    steps_range: tuple[PositiveInt, PositiveInt] | None = None  # None: finetune.steps for every trial
    objectives: tuple[Literal["target_fid", "source_fid"], ...] = ("target_fid",)
    sampler: Literal["tpe", "random", "gp"] = "tpe"
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _ranges(self) -> DiffSearchSpec:
        for name in ("s_range", "s_prime_range", "r_range", "lam_range", "lr_range", "steps_range"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and lo_hi[0] > lo_hi[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high, got {list(lo_hi)}")
        if self.s_range[0] != 0 or self.r_range[0] != 0:
            raise ValueError("s_range and r_range must start at 0, so that the baseline (plain fine-tuning, "
                             "s = 0 and r = 0) lies in the search space")
        if self.r_range[1] >= 1.0:
            raise ValueError(f"r_range: the bank fraction must stay below 1, got {list(self.r_range)}")
        if self.objectives not in (("target_fid",), ("target_fid", "source_fid")):
            raise ValueError("objectives must be [target_fid] or [target_fid, source_fid]")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


class FinetuneSpec(_Section):
    """The downstream data, the knowledge bank and the fine-tuning budget of a Diff-Tuning study."""

    data: str = "digits-5to9"  # the new domain's training images (a data set name, as metric.reference)
    n_images: PositiveInt | None = 100  # a seeded random subset of that many images; None: all of them
    data_seed: NonNegativeInt = 0
    source_reference: str = "digits-0to4"  # the pre-training domain, for the forgetting (source) FID
    steps: PositiveInt = 300  # the baseline's (plain fine-tuning's) budget, and every trial's without steps_range
    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 64
    eval_steps: tuple[PositiveInt, ...] = ()  # target FID reported here too, so weak trials can be pruned
    bank_size: PositiveInt = 500  # images sampled once from the pre-trained model, before any fine-tuning
    bank_seed: NonNegativeInt = 2_000_000
    seed: NonNegativeInt = 0  # training noise of the search (held-out confirmation retrains with new seeds)
    weights_dir: str = "skipsearch-weights"  # fine-tuned state dicts, one file per completed trial

    @model_validator(mode="after")
    def _steps(self) -> FinetuneSpec:
        if any(b <= a for a, b in zip(self.eval_steps, self.eval_steps[1:])):
            raise ValueError(f"eval_steps must increase, got {list(self.eval_steps)}")
        return self


class Spec(_Section):
    """What every study kind shares; ``SkipTuningSpec`` and ``DiffTuningSpec`` add their search spaces."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = "skip_tuning"
    description: str = ""
    storage: str = DEFAULT_STORAGE
    device: Literal["cpu", "cuda", "auto"] = "auto"
    model: ModelSpec = ModelSpec()
    sampler: SamplerSpec = SamplerSpec()
    metric: MetricSpec = MetricSpec()
    confirm: ConfirmSpec = ConfirmSpec()

    @model_validator(mode="after")
    def _disjoint_seeds(self) -> Spec:
        search_end = self.metric.seed + self.metric.n
        confirm_end = self.confirm.seed + self.confirm.n * self.confirm.seed_sets
        if self.confirm.seed < search_end and self.metric.seed < confirm_end:
            raise ValueError(f"confirm seeds [{self.confirm.seed}, {confirm_end}) overlap the search seeds "
                             f"[{self.metric.seed}, {search_end}); held-out seeds must be new")
        return self


class SkipTuningSpec(Spec):
    kind: Literal["skip_tuning"] = "skip_tuning"
    search: SearchSpec = SearchSpec()


class DiffTuningSpec(Spec):
    kind: Literal["diff_tuning"]
    model: ModelSpec = ModelSpec(name="digits-0to4")
    metric: MetricSpec = MetricSpec(reference="digits-5to9")
    search: DiffSearchSpec = DiffSearchSpec()
    finetune: FinetuneSpec = FinetuneSpec()

    @model_validator(mode="after")
    def _budget(self) -> DiffTuningSpec:
        if self.metric.rungs:
            raise ValueError("metric.rungs: a diff_tuning study is multi-fidelity over fine-tuning steps; "
                             "use finetune.eval_steps instead")
        shortest = self.search.steps_range[0] if self.search.steps_range else self.finetune.steps
        if self.finetune.eval_steps and self.finetune.eval_steps[-1] >= min(shortest, self.finetune.steps):
            raise ValueError(f"finetune.eval_steps must stay below the shortest fine-tuning run ({shortest} steps)")
        return self


KINDS: dict[str, type[Spec]] = {"skip_tuning": SkipTuningSpec, "diff_tuning": DiffTuningSpec}


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
    kind = raw.get("kind", "skip_tuning")
    if kind not in KINDS:
        raise UserError(f"{source}: invalid spec\n  kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    try:
        return KINDS[kind].model_validate(raw)
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
