"""The rows of skipsearch's tables as typed records: written and read through these, never as loose dicts.

Each record's fields are its table's columns (less ``id`` and ``created_at``, which the store fills in);
``tests/test_records.py`` checks that the two never drift apart. The numbers a record holds in its own columns
are also written as measurement rows (``own_measurements``), so that every number is one row of one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from skipsearch.results import Measurement

# a record's column holding a number -> (domain, metric); delta_fid is not one: it is derived from two others
OWN_NUMBERS = {"fid": ("target", "fid"), "kid": ("target", "kid"), "kid_std": ("target", "kid_std"),
               "source_fid": ("source", "fid"), "source_kid": ("source", "kid")}


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
    source_fid: float | None = None  # a second reference (Diff-Tuning: the pre-training domain)
    source_kid: float | None = None
    weights_path: str | None = None  # a file the trial made (fine-tuned weights)
    weights_hash: str | None = None
    evaluated: bool | None = None  # False: killed, interrupted or stopped by a bug (not in the budget)


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
    source_fid: float | None = None
    source_kid: float | None = None
    wall_s: float | None = None


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
    source_fid: float | None = None
    source_kid: float | None = None
    train_seed: int | None = None


def from_mapping(cls, mapping) -> object:
    """A record from a database row, keeping only the record's own fields."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dict(mapping).items() if k in names})


def own_measurements(row: TrialRow | RungRow | StepRow | ConfirmationRow, extractor: str) -> tuple[Measurement, ...]:
    """The numbers in a record's own columns (those that are not NULL), as measurements in ``extractor``'s
    feature space: the same numbers, never recomputed."""
    return tuple(Measurement(metric=metric, extractor=extractor, value=getattr(row, column), domain=domain)
                 for column, (domain, metric) in OWN_NUMBERS.items()
                 if getattr(row, column, None) is not None)


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
