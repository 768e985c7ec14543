"""Study specs: one YAML file per study, every field validated, every error naming its field.

This module holds the sections every study shares; each method adds its own (``methods/skip_tuning/skip_spec.py``
and its siblings), and ``skipsearch.specfile`` reads a spec, picking the method's spec class by ``kind`` from
the method registry (which imports this module, so this module never imports the methods).

Numbers have documented bounds (``README.md``, "Study specs"): seeds are 31-bit (they are stored in
32-bit database columns, and seed + sample count must stay below 2^31), sizes are capped at values no
study on one GPU reaches, and floats must be finite. A spec names things (model, extractor, data sets,
device) that ``skipsearch.resolve`` checks before anything is stored.

Two limits guard against results that look like numbers but mean nothing (README, "FID at small N"): a
study's ``name`` becomes a folder and file names, so it is a plain file name (``NAME_RULE``), and every N a
FID is computed at (``metric.n``, ``metric.rungs``, ``confirm.n``) is at least ``MIN_FID_N``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from skipsearch.diffusion.kinds import KARRAS, NAMES, kind_of
from skipsearch.fields import (BATCH_MAX, N_MAX, RHO_MAX, SEED_MAX, SIGMA_LIMIT, STEPS_MAX, TIMEOUT_MAX, TRIALS_MAX,
                               Batch, Count, DataName, Rate, Rho, Section, Seed, Sigma, Steps)
from skipsearch.models import FAMILIES, ModelSpec
from skipsearch.precisions import CUDA_ONLY, split_label
from skipsearch.spec_errors import shortened

if TYPE_CHECKING:  # sampling's module is torch's: a spec is parsed (``skipsearch best``, ``export``) without it
    from skipsearch.diffusion.generation import SamplerConfig

DEFAULT_STORAGE = "sqlite:///skipsearch.db"

# The fewest samples (and reference images) a FID is computed from. N samples' covariance has rank at most
# N - 1, so in any feature space (128-d digits, 2048-d Inception) FID at a handful of samples measures the
# sample size, not the model. 16 keeps the smallest rungs that tests and quick screens use; N below the
# feature dimension is allowed (FID-1k is common with Inception) and warned about by ``resolve``.
MIN_FID_N = 16
EVERY = 4  # the race is judged after every 4th seed set unless the spec says otherwise
# The most held-out samples a defaulted race spends on one entrant: 16 seed sets of the default 500. A spec that
# gives a larger confirm.n without seed_sets gets fewer sets (8,000 // n, at least 2), not 16 of its n.
RACE_SAMPLES = 8_000

# A study name becomes a folder (``finetune.weights_dir/NAME/``) and file names (the export hint's
# ``NAME.yaml``): a letter or digit first (no ``.``, ``..``, hidden or option-like names), then letters,
# digits, '.', '_' and '-' only (no path separators, spaces or characters a shell or file system reads).
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

__all__ = ["BATCH_MAX", "DEFAULT_STORAGE", "N_MAX", "RHO_MAX", "SEED_MAX", "SIGMA_LIMIT", "STEPS_MAX", "TIMEOUT_MAX",
           "TRIALS_MAX", "Batch", "ConfirmSpec", "Count", "MIN_FID_N", "MetricSpec", "ModelSpec", "NAME_RULE", "Rate",
           "ReportEntry", "Rho", "SamplerSpec", "SecondOpinionSpec", "SearchCommon", "Section", "Seed", "Sigma",
           "Spec", "Steps",
           "check_fid_n", "check_name", "science"]


def check_name(name: str) -> str:
    """A study name that is safe as a folder and a file name (``NAME_RULE``); a ValueError says the rule."""
    if not NAME_RULE.fullmatch(name):
        raise ValueError(f"{shortened(name)} cannot be a study name: it names a folder and files, so it must start "
                         f"with a letter or a digit and hold only letters, digits, '.', '_' and '-'")
    return name


def check_fid_n(n: int, what: str = "FID") -> int:
    """At least ``MIN_FID_N`` samples for a FID; a ValueError says why."""
    if n < MIN_FID_N:
        raise ValueError(f"{what} needs at least {MIN_FID_N} samples, got {n}: the covariance of N samples has rank "
                         f"at most N - 1, so a FID from so few measures the sample size, not the model")
    return n


class SamplerSpec(Section):
    """``name`` is an entry of the sampler table (``diffusion.kinds``): ``heun``/``euler``, EDM's samplers on a
    Karras schedule (sigma_min, sigma_max, rho), for every family; ``ddim``/``dpmpp_2m``/``euler_discrete``,
    diffusers' schedulers, for diffusers models (the sigma fields do not apply). ``guidance_scale`` > 1 is
    classifier-free guidance (text-conditioned models)."""

    name: Literal[NAMES] = "heun"  # the table's names, so a sampler added there is accepted here
    steps: int = Field(10, ge=1, le=1000)
    sigma_min: Sigma = 0.002
    sigma_max: Sigma = 80.0
    rho: float = Field(7.0, gt=0, le=100)
    guidance_scale: float = Field(1.0, ge=0, le=100)
    cfg_batched: bool = True

    @model_validator(mode="after")
    def _range(self) -> SamplerSpec:
        if self.sigma_min >= self.sigma_max:
            raise ValueError("sigma_min must be below sigma_max")
        return self

    def used(self) -> dict[str, Any]:
        """The settings this sampler reads, as provenance lists them: a diffusers scheduler takes its noise
        levels from the model's own schedule, so EDM's Karras fields would only mislead a reader there. A
        section read back from this (the left-out fields at their defaults) gives the same ``config()``."""
        values, reads = self.model_dump(mode="json"), kind_of(self.name).settings
        return {k: v for k, v in values.items() if k not in KARRAS or k in reads}

    def config(self) -> SamplerConfig:
        """What sampling reads. For a diffusers scheduler the Karras fields are unused, so they take their
        defaults here: a section that leaves them out (``used()``) is the same sampler as one that sets them."""
        from skipsearch.diffusion.generation import SamplerConfig

        reads = kind_of(self.name).settings
        karras = tuple(getattr(self, k) if k in reads else type(self).model_fields[k].default for k in KARRAS)
        return SamplerConfig(self.name, self.steps, *karras, self.guidance_scale, self.cfg_batched)


class ReportEntry(Section):
    """One extra metric computed beside the objective, on the same images, in ``extractor``'s feature space
    (default: the objective's ``metric.extractor``). Names are checked against the registries by ``resolve``
    (``metrics.reported``): parsing a spec loads no extractor."""

    metric: str = Field(min_length=1, max_length=64)
    extractor: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("extractor")
    @classmethod
    def _precision(cls, extractor: str | None) -> str | None:
        if extractor is not None:
            split_label(extractor)  # a ValueError names the bad precision suffix
        return extractor


# What the objective computes in ``metric.extractor`` (``metrics.registry.OBJECTIVE``): a report entry repeating
# it would store the same numbers twice. Plain names here: the registry is torch's, the spec is parsed without it.
OBJECTIVE_METRICS = ("fid", "kid")


class MetricSpec(Section):
    """``extractor`` names the feature space: a network, optionally with a faster precision than fp32
    (``inception-v3-compat@bf16``; skipsearch.precisions). The precision changes the numbers, so it is part of
    the name, and with it of every stored FID's label and of the study's science.

    ``report`` lists metrics computed beside the objective (FID in ``extractor``), on the same images at every
    score. They decide nothing (the search, pruning and the verdict read the objective only), so they are
    operational: a report added to an existing study is computed from then on, never refused."""

    operational: ClassVar[frozenset[str]] = frozenset({"report"})

    extractor: str = Field("skipsearch-digits", min_length=1, max_length=200)
    reference: DataName = "digits"
    n: Count = 500
    rungs: tuple[Count, ...] = Field((), max_length=20)  # smaller N reported first, e.g. [64, 256] below n = 1024
    seed: Seed = 0
    batch_size: Batch = 500
    kid_subset_size: int = Field(100, ge=2, le=N_MAX)
    report: tuple[ReportEntry, ...] = Field((), max_length=50)

    @field_validator("n")
    @classmethod
    def _enough_samples(cls, n: int) -> int:
        return check_fid_n(n)

    @field_validator("rungs")
    @classmethod
    def _enough_samples_per_rung(cls, rungs: tuple[int, ...]) -> tuple[int, ...]:
        for n in rungs:
            check_fid_n(n, f"every rung ({list(rungs)}) is a FID and")
        return rungs

    @field_validator("extractor")
    @classmethod
    def _precision(cls, extractor: str) -> str:
        split_label(extractor)  # a ValueError names the bad precision suffix; the network is checked by resolve
        return extractor

    @property
    def precision(self) -> str:
        return split_label(self.extractor)[1]

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

    @field_validator("report")
    @classmethod
    def _report(cls, report: tuple[ReportEntry, ...], info: ValidationInfo) -> tuple[ReportEntry, ...]:
        """No entry repeats the objective or another entry (their numbers would be stored twice)."""
        objective = info.data.get("extractor")
        seen: dict[tuple[str, str | None], int] = {}
        for i, entry in enumerate(report):
            key = (entry.metric, entry.extractor or objective)
            if key[1] == objective and entry.metric in OBJECTIVE_METRICS:
                raise ValueError(f"[{i}] is {entry.metric} in {objective}, the objective: every score computes and "
                                 f"stores it already (the {entry.metric} column); report it in another extractor")
            if key in seen:
                raise ValueError(f"[{i}] repeats [{seen[key]}]: {entry.metric} in {key[1]}")
            seen[key] = i
        return report

    def reported(self) -> tuple[tuple[str, str], ...]:
        """The report's (metric, extractor) pairs, an unset extractor as the objective's."""
        return tuple((e.metric, e.extractor or self.extractor) for e in self.report)

    @property
    def reduction_factor(self) -> int | None:
        return self.n // self.rungs[-1] if self.rungs else None


class SearchCommon(Section):
    """What every method's ``search`` section shares: the budget and the Optuna sampler proposing points."""

    operational: ClassVar[frozenset[str]] = frozenset({"trials", "sampler", "seed", "trial_timeout_s"})
    trials: int = Field(30, ge=1, le=TRIALS_MAX)
    sampler: Literal["tpe", "random", "gp"] = "tpe"
    seed: Seed = 0
    trial_timeout_s: float | None = Field(None, gt=0, le=TIMEOUT_MAX)  # a longer trial is FAIL, reason "timeout"


class SecondOpinionSpec(Section):
    """After the confirmation, the winner and the baseline are scored again in a second feature space, on the
    first ``n`` samples of the confirmation's first ``seed_sets`` held-out seed sets (at most the confirmation's N
    and seed sets: the images the confirmation judged, never the search's): a win in one space that the other
    calls worse is reported as "disagrees", not as a win (FID can be lowered in one space without better
    images). ``extractor``: ``auto`` (Inception where the objective uses a
    domain extractor, the shipped digits extractor where it uses Inception, none where that cannot read the
    samples or its weights are not installed, said in the verdict), ``auto@PRECISION`` (the same choice at a
    faster precision), ``none``, or an extractor label. Inception reads 6-8 images a second on 2 CPU cores
    (channels_last the faster), hence the small default ``n``."""

    extractor: str = Field("auto", min_length=1, max_length=200)
    n: Count = 200
    seed_sets: int = Field(3, ge=2, le=100)

    @field_validator("extractor")
    @classmethod
    def _precision(cls, extractor: str) -> str:
        if extractor not in ("auto", "none"):
            name, _ = split_label(extractor)  # a ValueError names the bad precision suffix
            if name == "none":
                raise ValueError(f"{extractor!r}: 'none' switches the second opinion off and takes no precision")
        return extractor

    @field_validator("n")
    @classmethod
    def _enough_samples(cls, n: int) -> int:
        return check_fid_n(2 * (n // 2), "the second opinion's FID")  # its debiased FID halves the samples

    @property
    def off(self) -> bool:
        return self.extractor == "none"

    @property
    def auto(self) -> bool:
        """``auto`` or ``auto@PRECISION``: the space is picked where the study runs (``second_opinion``)."""
        return split_label(self.extractor)[0] == "auto"


def _whole(value: Any) -> int | None:
    """A whole number as YAML may give it (3 or 3.0), else None: the field's own check names the problem."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None  # YAML's .inf and .nan too: int() of them would raise instead of naming the field
    if value != int(value):
        return None
    return int(value)


class ConfirmSpec(Section):
    """Held-out confirmation happens after the search; it never changes a search trial's numbers.

    Raced (``race: true``, the default wherever ``seed_sets`` allows two): ``seed_sets`` is the most rounds; each
    round adds a seed set for the baseline and every candidate still in; every ``every``-th round (and the last)
    the race is judged on the debiased paired ΔFID (``metrics.fid_debiased``) with intervals that stay honest
    under those looks and the choice among the candidates (``procedure``, ``search.sequential``), a clearly worse
    candidate leaves, and the race ends at a win, when no candidate can still be shown better, or at
    ``seed_sets``. The defaults, many small seed sets (16 of 500), give the paired interval its degrees of
    freedom for the samples a fixed design spent on three large ones (README, "A raced confirmation").
    Fixed (``race: false``): the baseline and the top-k each on ``seed_sets`` held-out seed sets of ``n``, judged
    by a 95% paired t interval on ΔFID; ``seed_sets: 1`` without ``race`` means this (one set cannot race)."""

    operational: ClassVar[frozenset[str]] = frozenset({"top_k", "n", "seed_sets", "seed", "race", "every",
                                                       "procedure", "second_opinion"})
    top_k: int = Field(3, ge=0, le=100)
    n: Count = 500
    seed_sets: int = Field(16, ge=1, le=100)
    seed: Seed = 1_000_000
    race: bool = True
    every: int = Field(EVERY, ge=1, le=100)
    procedure: Literal["bonferroni", "confidence-sequence"] = "bonferroni"
    second_opinion: SecondOpinionSpec = SecondOpinionSpec()

    @model_validator(mode="before")
    @classmethod
    def _race_where_it_can(cls, data: Any) -> Any:
        """What a section leaves out follows from what it gives: ``race`` is true where ``seed_sets`` allows a race
        (two or more; a spec that asks for one seed set asked for a quick fixed check, not for a refusal), and
        ``every`` is at most ``seed_sets`` (with three seed sets, the one look is at the third), and a larger ``n``
        without ``seed_sets`` gets as many sets as keep an entrant's samples at the default race's 8,000 (at least
        2): ``n: 2000``, the fixed design's old default, races 4 sets, not 16 of 2,000. Values given are kept as
        they are, and checked below."""
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        if "seed_sets" not in data and (n := _whole(data.get("n"))) is not None and n > 0:
            filled["seed_sets"] = max(2, min(cls.model_fields["seed_sets"].default, RACE_SAMPLES // n))
        sets = _whole(filled.get("seed_sets", cls.model_fields["seed_sets"].default))
        if sets is None or sets < 1:
            return data  # the field's own check names the problem
        filled.setdefault("race", sets >= 2)
        filled.setdefault("every", min(EVERY, sets))
        return filled

    @field_validator("n")
    @classmethod
    def _enough_samples(cls, n: int) -> int:
        return check_fid_n(n, "each held-out FID")

    @model_validator(mode="after")
    def _seeds(self) -> ConfirmSpec:
        if self.race and self.seed_sets < 2:
            raise ValueError(f"a race needs at least 2 seed sets (a paired interval needs two), got seed_sets "
                             f"{self.seed_sets}")
        if self.race and self.every > self.seed_sets:
            raise ValueError(f"every ({self.every}) must not exceed seed_sets ({self.seed_sets}), the race's last "
                             f"round")
        if self.seed + self.n * self.seed_sets - 1 > SEED_MAX:
            raise ValueError(f"seed + n x seed_sets must stay below 2^31 (seeds are 32-bit), got {self.seed} + "
                             f"{self.n} x {self.seed_sets}")
        return self


class Spec(Section):
    """What every study kind shares; each method's spec class adds its ``search`` section (and more)."""

    operational: ClassVar[frozenset[str]] = frozenset({"name", "description", "storage", "device"})

    name: str = Field(min_length=1, max_length=200)
    kind: str
    description: str = Field("", max_length=10_000)
    storage: str = Field(DEFAULT_STORAGE, max_length=4096)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    model: ModelSpec = Field(default_factory=lambda: FAMILIES[0].spec_class())
    sampler: SamplerSpec = SamplerSpec()
    metric: MetricSpec = MetricSpec()
    confirm: ConfirmSpec = ConfirmSpec()

    @field_validator("name")
    @classmethod
    def _file_safe(cls, name: str) -> str:
        return check_name(name)

    @model_validator(mode="after")
    def _disjoint_seeds(self) -> Spec:
        search_end = self.metric.seed + self.metric.n
        confirm_end = self.confirm.seed + self.confirm.n * self.confirm.seed_sets
        if self.confirm.seed < search_end and self.metric.seed < confirm_end:
            raise ValueError(f"confirm seeds [{self.confirm.seed}, {confirm_end}) overlap the search seeds "
                             f"[{self.metric.seed}, {search_end}); held-out seeds must be new")
        if self.device == "cpu" and self.metric.precision in CUDA_ONLY:
            raise ValueError(f"metric.extractor: precision {self.metric.precision!r} needs a CUDA device, and device "
                             f"is cpu (where it would compute plain fp32); drop the '@{self.metric.precision}' suffix "
                             f"or use device cuda")
        if self.metric.kid_subset_size > self.confirm.n:
            raise ValueError(f"metric.kid_subset_size ({self.metric.kid_subset_size}) must not exceed confirm.n "
                             f"({self.confirm.n})")
        return self


def science(section: BaseModel) -> dict[str, Any]:
    """The fields that decide a study's numbers, as JSON values, nested by section."""
    dumped = section.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name in type(section).model_fields:
        if name in getattr(section, "operational", frozenset()):
            continue
        value = getattr(section, name)
        out[name] = science(value) if isinstance(value, BaseModel) else dumped[name]
    return out
