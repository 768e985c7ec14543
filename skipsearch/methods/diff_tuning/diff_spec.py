"""The spec of a Diff-Tuning study: the ranges of the fine-tuning recipe, and the ``finetune`` section (new
domain, knowledge bank, budget)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from skipsearch.fields import DataName, OutputFolder
from skipsearch.spec import (SEED_MAX, TRIALS_MAX, Batch, Count, MetricSpec, ModelSpec, Rate, SearchCommon, Section,
                             Seed, Spec, Steps)
from skipsearch.models.embedded_family import EmbeddedModel

Exponent = Annotated[float, Field(ge=0, le=100)]  # s and s'
Fraction = Annotated[float, Field(ge=0, lt=1)]  # the bank's share of a batch
Weight = Annotated[float, Field(gt=0, le=1000)]  # lambda


class DiffSearchSpec(SearchCommon):
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


class FinetuneSpec(Section):
    """The downstream data, the knowledge bank and the fine-tuning budget of a Diff-Tuning study."""

    operational: ClassVar[frozenset[str]] = frozenset({"weights_dir"})

    data: DataName = "digits-5to9"  # the new domain's training images
    n_images: Count | None = 100  # a seeded random subset of that many images; None: all of them
    data_seed: Seed = 0
    source_reference: DataName = "digits-0to4"  # the pre-training domain
    steps: Steps = 300  # the baseline's (plain fine-tuning's) budget, and every trial's without steps_range
    lr: Rate = 1e-3
    batch_size: Batch = 64
    eval_steps: tuple[Steps, ...] = Field((), max_length=100)  # target FID reported here too, for pruning
    bank_size: Count = 500  # images sampled once from the pre-trained model, before any fine-tuning
    bank_seed: Seed = 2_000_000
    seed: Seed = 0  # training noise of the search (held-out confirmation retrains with new seeds)
    weights_dir: OutputFolder = "skipsearch-weights"  # one file per completed trial

    @model_validator(mode="after")
    def _steps(self) -> FinetuneSpec:
        if any(b <= a for a, b in zip(self.eval_steps, self.eval_steps[1:])):
            raise ValueError(f"eval_steps must increase, got {list(self.eval_steps)}")
        if self.bank_seed + self.bank_size - 1 > SEED_MAX:
            raise ValueError(f"bank_seed + bank_size must stay below 2^31, got {self.bank_seed} + {self.bank_size}")
        return self


class DiffTuningSpec(Spec):
    kind: Literal["diff_tuning"]
    model: ModelSpec = Field(default_factory=lambda: EmbeddedModel(name="digits-0to4"))
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
