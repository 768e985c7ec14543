"""Study specs: one YAML file per study, every field validated, every error naming its field.

Numbers have documented bounds (``README.md``, "Study specs"): seeds are 31-bit (they are stored in
32-bit database columns, and seed + sample count must stay below 2^31), sizes are capped at values no
study on one GPU reaches, and floats must be finite. A spec names things (model, extractor, data sets,
device) that ``skipsearch.resolve`` checks before anything is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skipsearch import textfiles
from skipsearch.errors import UserError
from skipsearch.generate import SamplerConfig
from skipsearch.skip import FAMILIES, RHO_MAX, SIGMA_LIMIT

DEFAULT_STORAGE = "sqlite:///skipsearch.db"
SEED_MAX = 2**31 - 1  # seeds and seed + count stay below this (32-bit database columns)
N_MAX = 1_000_000  # samples per evaluation
BATCH_MAX = 65_536
TRIALS_MAX = 100_000
STEPS_MAX = 10_000_000  # fine-tuning steps
TIMEOUT_MAX = 7 * 24 * 3600.0

Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Count = Annotated[int, Field(gt=0, le=N_MAX)]
Batch = Annotated[int, Field(gt=0, le=BATCH_MAX)]
Rho = Annotated[float, Field(gt=0, le=RHO_MAX)]
Sigma = Annotated[float, Field(gt=0, le=SIGMA_LIMIT)]
Exponent = Annotated[float, Field(ge=0, le=100)]  # Diff-Tuning's s and s'
Fraction = Annotated[float, Field(ge=0, lt=1)]  # the bank's share of a batch
Weight = Annotated[float, Field(gt=0, le=1000)]  # lambda
Rate = Annotated[float, Field(gt=0, le=1)]  # learning rate
Steps = Annotated[int, Field(ge=1, le=STEPS_MAX)]  # fine-tuning steps


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Section):
    name: str = Field("embedded-digits", min_length=1, max_length=200)


class SamplerSpec(_Section):
    name: Literal["heun", "euler"] = "heun"
    steps: int = Field(10, ge=1, le=1000)
    sigma_min: Sigma = 0.002
    sigma_max: Sigma = 80.0
    rho: float = Field(7.0, gt=0, le=100)

    @model_validator(mode="after")
    def _range(self) -> SamplerSpec:
        if self.sigma_min >= self.sigma_max:
            raise ValueError("sigma_min must be below sigma_max")
        return self

    def config(self) -> SamplerConfig:
        return SamplerConfig(self.name, self.steps, self.sigma_min, self.sigma_max, self.rho)


class MetricSpec(_Section):
    extractor: str = Field("skipsearch-digits", min_length=1, max_length=200)
    reference: str = Field("digits", min_length=1, max_length=4096)
    n: Count = 500
    rungs: tuple[Count, ...] = Field((), max_length=20)  # smaller N reported first, e.g. [64, 256] below n = 1024
    seed: Seed = 0
    batch_size: Batch = 500
    kid_subset_size: int = Field(100, ge=2, le=N_MAX)

    @model_validator(mode="after")
    def _ladder(self) -> MetricSpec:
        ladder = [*self.rungs, self.n]
        if any(b <= a for a, b in zip(ladder, ladder[1:])):
            raise ValueError(f"rungs must increase and stay below n: got rungs {list(self.rungs)} with n {self.n}")
        ratios = {b / a for a, b in zip(ladder, ladder[1:])}
        if len(ratios) > 1 or any(r != int(r) for r in ratios):
            raise ValueError(f"rungs and n must grow by one constant whole factor (as ASHA's milestones do), "
                             f"got {ladder}")
        if self.kid_subset_size > ladder[0]:
            raise ValueError(f"kid_subset_size ({self.kid_subset_size}) must not exceed the smallest N a trial is "
                             f"scored at ({ladder[0]}): KID draws subsets of that size from the samples")
        if self.seed + self.n - 1 > SEED_MAX:
            raise ValueError(f"seed + n must stay below 2^31 (seeds are 32-bit), got {self.seed} + {self.n}")
        return self

    @property
    def reduction_factor(self) -> int | None:
        return self.n // self.rungs[-1] if self.rungs else None


class _SearchCommon(_Section):
    trials: int = Field(30, ge=1, le=TRIALS_MAX)
    sampler: Literal["tpe", "random", "gp"] = "tpe"
    seed: Seed = 0
    trial_timeout_s: float | None = Field(None, gt=0, le=TIMEOUT_MAX)  # a longer trial is FAIL, reason "timeout"


class SearchSpec(_SearchCommon):
    family: Literal[FAMILIES] = "linear"  # type: ignore[valid-type]
    rho_range: tuple[Rho, Rho] = (0.5, 1.5)
    sigma_range: tuple[Sigma, Sigma] = (0.002, 80.0)

    @model_validator(mode="after")
    def _ranges(self) -> SearchSpec:
        lo, hi = self.rho_range
        if not lo < 1.0 < hi:
            raise ValueError(f"rho_range must contain 1 strictly inside (the baseline), got [{lo}, {hi}]")
        if self.sigma_range[0] >= self.sigma_range[1]:
            raise ValueError("sigma_range must be increasing")
        return self


class ConfirmSpec(_Section):
    top_k: int = Field(3, ge=0, le=100)
    n: Count = 2000
    seed_sets: int = Field(3, ge=1, le=100)
    seed: Seed = 1_000_000

    @model_validator(mode="after")
    def _seeds(self) -> ConfirmSpec:
        if self.seed + self.n * self.seed_sets - 1 > SEED_MAX:
            raise ValueError(f"seed + n x seed_sets must stay below 2^31 (seeds are 32-bit), got {self.seed} + "
                             f"{self.n} x {self.seed_sets}")
        return self


class DiffSearchSpec(_SearchCommon):
    """Ranges of the Diff-Tuning weights; a range given as one number fixes that weight."""

    trials: int = Field(20, ge=1, le=TRIALS_MAX)
    s_range: tuple[Exponent, Exponent] = (0.0, 3.0)  # reconsolidation exponent s
    s_prime_range: tuple[Exponent, Exponent] = (0.0, 3.0)  # retention exponent s'
    r_range: tuple[Fraction, Fraction] = (0.0, 0.5)  # bank fraction of each batch
    lam_range: tuple[Weight, Weight] = (0.01, 1.0)  # retention weight (log scale)
    lr_range: tuple[Rate, Rate] | None = None  # None: finetune.lr for every trial
    steps_range: tuple[Steps, Steps] | None = None  # None: finetune.steps for every trial
    objectives: tuple[Literal["target_fid", "source_fid"], ...] = ("target_fid",)

    @model_validator(mode="after")
    def _ranges(self) -> DiffSearchSpec:
        for name in ("s_range", "s_prime_range", "r_range", "lam_range", "lr_range", "steps_range"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and lo_hi[0] > lo_hi[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high, got {list(lo_hi)}")
        if self.s_range[0] != 0 or self.r_range[0] != 0:
            raise ValueError("s_range and r_range must start at 0, so that the baseline (plain fine-tuning, "
                             "s = 0 and r = 0) lies in the search space")
        if self.objectives not in (("target_fid",), ("target_fid", "source_fid")):
            raise ValueError("objectives must be [target_fid] or [target_fid, source_fid]")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


class FinetuneSpec(_Section):
    """The downstream data, the knowledge bank and the fine-tuning budget of a Diff-Tuning study."""

    data: str = Field("digits-5to9", min_length=1, max_length=4096)  # the new domain's training images
    n_images: Count | None = 100  # a seeded random subset of that many images; None: all of them
    data_seed: Seed = 0
    source_reference: str = Field("digits-0to4", min_length=1, max_length=4096)  # the pre-training domain
    steps: Steps = 300  # the baseline's (plain fine-tuning's) budget, and every trial's without steps_range
    lr: Rate = 1e-3
    batch_size: Batch = 64
    eval_steps: tuple[Steps, ...] = Field((), max_length=100)  # target FID reported here too, for pruning
    bank_size: Count = 500  # images sampled once from the pre-trained model, before any fine-tuning
    bank_seed: Seed = 2_000_000
    seed: Seed = 0  # training noise of the search (held-out confirmation retrains with new seeds)
    weights_dir: str = Field("skipsearch-weights", min_length=1, max_length=4096)  # one file per completed trial

    @model_validator(mode="after")
    def _steps(self) -> FinetuneSpec:
        if any(b <= a for a, b in zip(self.eval_steps, self.eval_steps[1:])):
            raise ValueError(f"eval_steps must increase, got {list(self.eval_steps)}")
        if self.bank_seed + self.bank_size - 1 > SEED_MAX:
            raise ValueError(f"bank_seed + bank_size must stay below 2^31, got {self.bank_seed} + {self.bank_size}")
        return self


class Spec(_Section):
    """What every study kind shares; ``SkipTuningSpec`` and ``DiffTuningSpec`` add their search spaces."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = "skip_tuning"
    description: str = Field("", max_length=10_000)
    storage: str = Field(DEFAULT_STORAGE, max_length=4096)
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
        if self.metric.kid_subset_size > self.confirm.n:
            raise ValueError(f"metric.kid_subset_size ({self.metric.kid_subset_size}) must not exceed confirm.n "
                             f"({self.confirm.n})")
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
        if self.finetune.seed + 1 + self.confirm.seed_sets > SEED_MAX:
            raise ValueError("finetune.seed + confirm.seed_sets must stay below 2^31 (held-out retraining seeds)")
        return self


KINDS: dict[str, type[Spec]] = {"skip_tuning": SkipTuningSpec, "diff_tuning": DiffTuningSpec}


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    """One line per bad field: its dotted name, the reason, and (shortened) what was given."""
    lines = [f"{source}: invalid {'spec' if not prefix else prefix.rstrip('.')}"]
    for e in err.errors():
        field = prefix + ".".join(str(p) for p in e["loc"]) if e["loc"] else (prefix.rstrip(".") or "(top level)")
        reason = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        quiet = e["type"] in ("extra_forbidden", "missing", "value_error")
        shown = "" if quiet else f" (got {_shown(e.get('input'))})"
        lines.append(f"  {field}: {reason}{shown}")
    return "\n".join(lines)


def parse_spec(raw: object, source: str = "spec") -> Spec:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a spec must be a YAML mapping, got {type(raw).__name__}")
    kind = raw.get("kind", "skip_tuning")
    if not isinstance(kind, str) or kind not in KINDS:
        raise UserError(f"{source}: invalid spec\n  kind: must be one of {', '.join(KINDS)} (got {_shown(kind)})")
    try:
        return KINDS[kind].model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(source, err)) from None


def load_spec(path: str | Path) -> Spec:
    text = textfiles.read_text(path, "spec file")
    return parse_spec(textfiles.parse(text, "yaml", str(path)), str(path))
