"""The rows of skipsearch's tables as typed records: written and read through these, never as loose dicts.

A record's fields are its table's columns (less ``id`` and ``created_at``, which the store fills in), and
what is kept beside it in two tables of its own (``tests/test_records.py`` checks that they never drift apart):

- its numbers (``NUMBERS``: the objective's FID, KID and KID's spread, in the study's feature space; and
  ``references``: the same numbers against a method's further references, by (domain, metric)) are measurement
  rows (``own_measurements``), as every number is one row of one table;
- ``extras``: what the method keeps of the record under its own names (``tables.extras``), which no shared
  module reads by name.

``delta_fid`` is no number of its own: the store derives it from the trial's and the baseline's FID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from skipsearch.results import Extra, Measurement, Score

TARGET = "target"  # the domain of the study's own reference
NUMBERS = ("fid", "kid", "kid_std")  # a record's own numbers (its fields), each a measurement row in the target
# the fields of a record that are not columns of its table
KEPT_BESIDE = frozenset({*NUMBERS, "delta_fid", "references", "extras"})
References = dict[tuple[str, str], float]  # (domain, metric) -> value, in the record's feature space


def number_column(domain: str, metric: str) -> str:
    """The frame column of a number: its metric in the target (``fid``), ``DOMAIN_METRIC`` in a method's further
    reference (Diff-Tuning's ``source_fid``)."""
    return metric if domain == TARGET else f"{domain}_{metric}"


def references_of(scores: Mapping[str, Score]) -> References:
    """A rung's or held-out evaluation's scores against further references, as a record's ``references``."""
    return {(domain, metric): getattr(s, metric) for domain, s in scores.items() for metric in NUMBERS
            if getattr(s, metric) is not None}


@dataclass(frozen=True, kw_only=True)
class TrialRow:
    """A finished (or failed) trial: its coefficients, numbers and what reproduces them."""

    study_name: str
    trial_number: int
    role: str  # "baseline" or "search"
    state: str  # COMPLETE, PRUNED or FAIL
    coefficients_json: str
    n: int
    seed_start: int
    sampler_json: str
    nfe: int
    model_id: str
    extractor: str
    versions_json: str
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    delta_fid: float | None = None
    model_hash: str | None = None
    ref_hash: str | None = None
    wall_s: float | None = None
    error: str | None = None
    evaluated: bool | None = None  # False: killed, interrupted or stopped by a bug (not in the budget)
    references: References = field(default_factory=dict)
    extras: dict[str, Extra] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RungRow:
    """A trial's FID at an intermediate sample count."""

    study_name: str
    trial_number: int
    n: int
    fid: float
    kid: float | None = None
    wall_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class StepRow:
    """A trial's FID at an intermediate training step."""

    study_name: str
    trial_number: int
    step: int
    n: int
    fid: float
    kid: float | None = None
    wall_s: float | None = None
    references: References = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ConfirmationRow:
    """One candidate on one held-out seed set."""

    study_name: str
    trial_number: int
    seed_set: int
    seed_start: int
    n: int
    fid: float
    extractor: str
    kid: float | None = None
    kid_std: float | None = None
    ref_hash: str | None = None
    wall_s: float | None = None
    references: References = field(default_factory=dict)
    extras: dict[str, Extra] = field(default_factory=dict)


Record = TrialRow | RungRow | StepRow | ConfirmationRow


def from_mapping(cls, mapping) -> object:
    """A record from a database row, keeping only the record's own fields."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dict(mapping).items() if k in names})


def columns_of(row: Record) -> dict:
    """The values of a record's table columns: its fields less those kept beside it."""
    return {f.name: getattr(row, f.name) for f in fields(row) if f.name not in KEPT_BESIDE}


def own_measurements(row: Record, extractor: str) -> tuple[Measurement, ...]:
    """A record's numbers (those that are not None) as measurements in ``extractor``'s feature space: the same
    numbers, never recomputed."""
    own = [(TARGET, metric, getattr(row, metric, None)) for metric in NUMBERS]
    own += [(domain, metric, value) for (domain, metric), value in getattr(row, "references", {}).items()]
    return tuple(Measurement(metric=metric, extractor=extractor, value=value, domain=domain)
                 for domain, metric, value in own if value is not None)


@dataclass(frozen=True, kw_only=True)
class MeasuredAt:
    """Where a measurement was taken: the key of ``tables.measurements`` besides study, trial and what it names."""

    stage: str
    n: int
    step: int = -1
    seed_set: int = -1


def with_own(row, extractor: str, extra: Sequence[Measurement]) -> tuple[Measurement, ...]:
    """A record's own numbers as measurements, then the ``extra`` ones. An extra one with the key of an own one
    (the objective passed again) is the same number or a bug: two values for one measurement."""
    own = own_measurements(row, extractor)
    known = {(m.domain, m.metric, m.extractor): m.value for m in own}
    out = list(own)
    for m in extra:
        key = (m.domain, m.metric, m.extractor)
        if key not in known:
            out.append(m)
            known[key] = m.value
        elif known[key] != m.value:
            raise ValueError(f"two values for {key} of one record: {known[key]!r} and {m.value!r}")
    return tuple(out)
