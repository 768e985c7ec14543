"""What ``skipsearch bench --calibration`` is set up with and what it found: the setup fixed before the first
study (``CalibrationSetup``), the truth of the known effect (``Truth``), each rule on each space
(``RuleResult``) and the whole run (``Calibration``). Plain data, filled by ``bench.calibration`` and printed by
``bench.calibration_table``, as ``versus_results`` is for versus-plain.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from skipsearch.search.race import RacePlan
from skipsearch.search.race_simulation import clopper_pearson

PLAIN_EFFECT_STREAM = 9  # the stream index of the plain loop's own seeds for the effect candidate


@dataclass(frozen=True, kw_only=True)
class CalibrationSetup:
    """Everything fixed before the first study: the sampling, the race's plan and the known effect."""

    n: int = 64  # samples per seed set
    steps: int = 5  # Heun steps (9 NFE)
    batch_size: int = 512
    null_candidates: int = 2  # null candidates per null study (the plain loop's K on the null)
    effect_nulls: int = 0  # null candidates raced beside the effect candidate
    max_rounds: int = 6
    every: int = 2
    procedure: str = "bonferroni"
    rho_top: float = 1.033
    rho_bottom: float = 1.318
    truth_sets: int = 24
    model: str = "embedded-digits"
    extractor: str = "skipsearch-digits"
    reference: str = "digits"

    def __post_init__(self) -> None:
        # the streams' seed blocks must not meet: each null candidate has its own shift, below the plain loop's
        if not 1 <= self.null_candidates < PLAIN_EFFECT_STREAM or not 0 <= self.effect_nulls < PLAIN_EFFECT_STREAM:
            raise ValueError(f"null_candidates must be 1 to {PLAIN_EFFECT_STREAM - 1} and effect_nulls 0 to "
                             f"{PLAIN_EFFECT_STREAM - 1}, not {self.null_candidates} and {self.effect_nulls}")
        if self.n < 4:
            raise ValueError(f"n must be at least 4 (a debiased FID needs two halves of 2), not {self.n}")

    def plan(self, candidates: int) -> RacePlan:
        return RacePlan(max_rounds=self.max_rounds, candidates=candidates, every=self.every,
                        procedure=self.procedure)


@dataclass(frozen=True, kw_only=True)
class RuleResult:
    """One rule on one space over many studies: how often it claimed a win, how often wrongly (a candidate
    whose true ΔFID is not below 0), how often the claimed interval held the truth (``covered``; None for
    the plain rule, which claims a point), and how far its claimed ΔFID was from the truth."""

    rule: str
    space: str
    studies: int
    claims: int
    false_claims: int
    covered: int | None
    errors: tuple[float, ...] = field(default=())  # claimed ΔFID minus the truth, per claim
    claim_rounds: tuple[int, ...] = field(default=())  # the race: seed sets read before each claim
    half_widths: tuple[float, ...] = field(default=())  # the race: each claimed interval's half-width
    evaluations: float = 0.0  # mean evaluations (seed sets x streams) per study that this rule read

    @property
    def claim_rate(self) -> float:
        return self.claims / self.studies

    @property
    def false_rate(self) -> float:
        return self.false_claims / self.studies

    @property
    def false_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.false_claims, self.studies)

    @property
    def claim_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.claims, self.studies)

    @property
    def coverage(self) -> float:
        return self.covered / self.claims if self.covered is not None and self.claims else math.nan

    @property
    def coverage_interval(self) -> tuple[float, float]:
        if self.covered is None or not self.claims:
            return (math.nan, math.nan)
        return clopper_pearson(self.covered, self.claims)

    @property
    def error_mean(self) -> float:
        return statistics.fmean(self.errors) if self.errors else math.nan


@dataclass(frozen=True, kw_only=True)
class Truth:
    """The effect candidate's true ΔFID, estimated on fresh seed sets: mean paired debiased ΔFID and its
    standard error."""

    mean: float
    se: float
    sets: int


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """The whole benchmark: its setup, the truth of the known effect, each rule on each space, the wall time."""

    setup: CalibrationSetup
    truth: Truth
    results: tuple[RuleResult, ...]
    evaluations: int
    wall_s: float

    def result(self, rule: str, space: str) -> RuleResult:
        return next(r for r in self.results if r.rule == rule and r.space == space)
