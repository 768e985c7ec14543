"""Typed results, from the evaluator to the database and back: a ``Score`` (one FID/KID evaluation), a
trial's ``Rung``s, a held-out evaluation. They cross the Ray boundary as JSON (``Rung.to_json``) and are
written to skipsearch's tables through ``skipsearch.storage.records``. Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


# a method's own value kept with a record (a file's path, its hash, a training seed): JSON, stored as the method
# names it (``storage.tables.extras``); no shared module reads one by name
Extra = str | int | float | bool | None


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One number a metric gave, named by what it measures: the metric (``fid``, ``kid``, ``precision``...), the
    feature space it was computed in (the extractor's name) and the domain of the reference (``target``; a
    method's second reference, such as Diff-Tuning's pre-training data, names its own). Where and when it was
    measured (trial, stage, N or step, seed set) is the record it travels with."""

    metric: str
    extractor: str
    value: float
    domain: str = "target"


@dataclass(frozen=True, kw_only=True)
class Score:
    """One FID/KID evaluation and what names it: the samples (N, first seed, NFE), the feature space, the
    reference statistics and the model."""

    fid: float
    kid: float
    kid_std: float
    n: int
    seed_start: int
    nfe: int
    extractor: str
    ref_hash: str
    model_id: str
    model_hash: str
    wall_s: float
    timings: dict[str, float] = field(default_factory=dict)
    preview: str | None = None  # base64 PNG grid of the first samples (``skipsearch.previews``)
    # network evaluations (samples x per-sample evaluations) not run: started from the baseline's cached states
    evaluations_saved: int = 0
    # the spec's ``metric.report``: every metric in every feature space asked for beside the objective
    measurements: tuple[Measurement, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict) -> Score:
        """A score from ``asdict`` (JSON across the Ray boundary)."""
        return cls(**raw | {"measurements": tuple(Measurement(**m) for m in raw.get("measurements", ()))})


@dataclass(frozen=True, kw_only=True)
class Rung:
    """One fidelity level a trial reached. ``progress`` is in the method's fidelity unit (samples or
    training steps); ``final`` marks the trial's last rung, which makes it COMPLETE."""

    score: Score  # the target FID/KID, at score.n samples
    progress: int
    final: bool
    step: int | None = None  # the training step, for methods that train
    # the same samples scored against a method's further references, by domain (``Measurement.domain``)
    references: dict[str, Score] = field(default_factory=dict)
    extras: dict[str, Extra] = field(default_factory=dict)  # what the method keeps of the trial (its own names)
    wall_s: float  # the trial so far
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Rung:
        raw = json.loads(text)
        return cls(**raw | {"score": Score.from_dict(raw["score"]),
                            "references": {d: Score.from_dict(s) for d, s in raw["references"].items()}})


@dataclass(frozen=True, kw_only=True)
class HeldOut:
    """One candidate on one held-out seed set: its target score, its scores against the method's further
    references, and what the method keeps of it (``Rung``'s ``references`` and ``extras``)."""

    score: Score
    wall_s: float
    references: dict[str, Score] = field(default_factory=dict)
    extras: dict[str, Extra] = field(default_factory=dict)
