"""Provenance: what a stored or exported result needs to be reproduced, as a schema.

``export`` writes a ``Provenance`` beside the coefficients; ``verify`` and ``apply`` read it back through the
same schema, so a hand-edited or hostile coefficient file is refused field by field (the error names the
field) instead of failing deep inside sampling. Bounds are the spec's.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from skipsearch.models import ModelSection, ModelSpec, as_section
from skipsearch.spec import N_MAX, SEED_MAX, Batch, Count, Rho, SamplerSpec, Seed

Fid = Annotated[float, Field(ge=0)]
Hash16 = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
Name = Annotated[str, Field(min_length=1, max_length=4096)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelRef(_Part):
    id: Name
    hash: Hash16
    spec: ModelSpec | None = None  # the study's model section (files from before model families: a shipped name)

    @property
    def asks_trust(self) -> bool:
        """Whether the file's model section says a trust flag was needed (informative only: never honoured)."""
        return self.spec is not None and any(getattr(self.spec, name) is True for name in trust_fields(self.spec))

    def section(self, trust_pickles: bool = False) -> ModelSection:
        """The model section with trust as the USER gives it. A coefficient file's own ``trust_*`` flags are
        switched off here, before anything looks the model up, hashes or loads it: a file cannot vouch for the
        pickle it names (a hostile file would otherwise run code). ``trust_pickles`` is the user's own choice
        (``skipsearch verify --trust-pickles``), given on their command line or in their Python call."""
        section = self.spec if self.spec is not None else as_section(self.id)
        flags = trust_fields(section)
        if not flags:
            return section
        given = {name: False for name in flags}
        if "trust_pickles" in flags and getattr(section, "path", None) is not None:  # a folder or a file to trust
            given["trust_pickles"] = trust_pickles
        return section.model_copy(update=given)


def trust_fields(section: ModelSection) -> tuple[str, ...]:
    """The model section's trust flags: every boolean ``trust_*`` field (``trust_pickles`` today), so that a
    family adding one is covered without a change here."""
    return tuple(name for name, f in type(section).model_fields.items()
                 if name.startswith("trust_") and f.annotation is bool)


class MetricRef(_Part):
    extractor: Name
    reference: Name
    rungs: tuple[Count, ...] = ()
    reference_hash: Hash16 | None = None
    batch_size: Batch
    kid_subset_size: int = Field(ge=2, le=N_MAX)


class SearchRecord(_Part):
    """The trial as the search scored it: ``verify`` reproduces this FID."""

    n: Count
    seed_start: Seed
    fid: Fid
    kid: float
    delta_fid: float | None = None


class SeedSetRecord(_Part):
    seed_start: Seed
    fid: Fid
    train_seed: Seed | None = None
    source_fid: Fid | None = None


class RaceRecord(_Part):
    """A raced confirmation's judgement of this trial (``search.racing``): the debiased paired dFID over the seed
    sets it ran, the interval the race gave it at its last look (corrected for the race's looks and candidates;
    None before its first look), how the race ended for it, and the race's last decision in words."""

    judged: Annotated[str, Field(min_length=1, max_length=64)] = "fid_debiased"
    delta: float
    low: float | None = None
    high: float | None = None
    seed_sets: int = Field(ge=0)
    status: Name
    decision: Name


class OpinionRecord(_Part):
    """The second feature space's word on this trial (``search.second_opinion``): its paired debiased dFID against
    the baseline over the opinion's seed sets, with the 95% t interval (None with one seed set)."""

    extractor: Name
    n: Count
    seed_sets: int = Field(ge=1)
    delta: float
    low: float | None = None
    high: float | None = None


class ConfirmationRecord(_Part):
    n: Count
    heldout_fid: Fid
    delta_fid: float
    delta_fid_std: float = Field(ge=0)
    # the 95% paired t interval (None with one seed set, in a raced confirmation, whose interval is ``race``'s, and
    # in older files)
    delta_fid_low: float | None = None
    delta_fid_high: float | None = None
    seed_sets: tuple[SeedSetRecord, ...] = ()
    race: RaceRecord | None = None  # a raced confirmation's (None: a fixed one, and older files)
    second_opinion: OpinionRecord | None = None  # None: none taken on this trial, and older files


class VerdictRecord(_Part):
    """The study's verdict when the file was written (``search.verdict``, the sentence ``best`` and the end of a
    run print): whether this file's trial is a claimed win, and the sentence, which names the trial it judges. A
    file exported without a win says so itself, wherever it is copied to."""

    claimed_win: bool
    text: Annotated[str, Field(min_length=1, max_length=20_000)]


class WeightsRef(_Part):
    """A Diff-Tuning trial's fine-tuned state dict, and the recipe it was trained with (the trial's coefficients
    as the database holds them): ``verify`` and ``apply`` refuse a file whose coefficients say otherwise (files
    from before this field: nothing to compare)."""

    path: Name
    sha256_16: Hash16
    recipe: dict[Annotated[str, Field(max_length=64)], int | float] | None = Field(None, max_length=32)


class SourceRecord(_Part):
    reference: Name
    fid: Fid | None = None
    kid: float | None = None
    heldout_fid: Fid | None = None


class SamplingClasses(_Part):
    target: tuple[Annotated[int, Field(ge=0, le=1_000_000)], ...] = ()
    source: tuple[Annotated[int, Field(ge=0, le=1_000_000)], ...] = ()


class SkipRecord(_Part):
    """A skip point of the model and the rho a Skip-Tuning file gives it (outside a time window: 1)."""

    index: int = Field(ge=0, le=10_000)
    level: int = Field(ge=0, le=10_000)
    path: Name
    rho: Rho


class Provenance(_Part):
    study: Name
    trial: int = Field(ge=0, le=SEED_MAX)
    role: Annotated[str, Field(max_length=16)]
    storage: Annotated[str, Field(max_length=4096)]  # shown without its password
    model: ModelRef
    sampler: SamplerSpec
    nfe: int = Field(ge=1, le=2000)
    metric: MetricRef
    search: SearchRecord
    confirmation: ConfirmationRecord | None = None
    verdict: VerdictRecord | None = None  # None: nothing confirmed when it was written, and older files
    versions: dict[str, Annotated[str, Field(max_length=200)]] = Field(default_factory=dict, max_length=50)
    exported_at: Annotated[str, Field(max_length=64)] = ""
    weights: WeightsRef | None = None  # Diff-Tuning
    finetune: dict[str, Any] | None = None  # Diff-Tuning: the spec's finetune section
    sampling_classes: SamplingClasses | None = None  # class-conditional models
    source: SourceRecord | None = None  # Diff-Tuning: the forgetting (source-domain) FID
    skips: tuple[SkipRecord, ...] | None = Field(None, max_length=10_000)  # Skip-Tuning: every skip point's rho

    @field_serializer("sampler")
    def _sampler_as_used(self, sampler: SamplerSpec) -> dict[str, Any]:
        """Only the settings the named sampler reads (no EDM sigma range for a diffusers scheduler); a file
        written before this, with them all, still reads back (they are the section's own fields)."""
        return sampler.used()
