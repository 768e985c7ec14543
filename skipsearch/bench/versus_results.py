"""What one repeat of ``skipsearch bench --versus-plain`` found: each side's winner and costs (``Side``) and the
repeat with its ratios (``VersusRepeat``). Plain data, read by the run (``versus_plain``) that fills it and by
the table (``versus_table``) that prints it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skipsearch.bench.plain_loop import PlainSearch
    from skipsearch.bench.versus_judge import Match

TARGET_RATIO = 3.0  # plain evaluations to a winner over skipsearch's


@dataclass(frozen=True, kw_only=True)
class Side:
    """One side's result in one repeat."""

    name: str  # "skipsearch" or "plain"
    winner: str  # the chosen coefficients, described ("baseline" when the baseline stays)
    trial: int | None  # the trial that became the winner (None: the baseline)
    heldout_fid: float  # mean over the held-out seed sets, at confirm.n
    delta_fid: float  # mean over the seed sets of FID(winner) - FID(baseline)
    evals_to_winner: int  # network evaluations (samples x NFE) until the winner was known
    total_evals: int  # network evaluations the side spent in all
    trials: int  # search trials run
    wall_s: float  # the side's wall time (the plain side's held-out evaluation excluded)
    second_delta_fid: float = math.nan  # paired debiased dFID in the second space (NaN: none was taken)


@dataclass(frozen=True, kw_only=True)
class VersusRepeat:
    """Both sides of one repeat (sampler seed ``repeat``), with the seeds each used."""

    repeat: int
    nfe: int
    skipsearch: Side
    plain: Side
    skipsearch_confirmation_dfid: float  # its winner's held-out dFID on its own confirmation (which chose it there)
    baseline_heldout_fid: float  # on the judging seed sets
    heldout_seeds: tuple[tuple[int, int], ...]  # [start, stop) of each judging seed set
    plain_seeds: tuple[tuple[int, int], ...]  # [start, stop) of each plain trial's seeds
    counted_at_network: tuple[int, int]  # (skipsearch, plain run) forward-call samples: the check on the counts
    confirmation_evals: int  # skipsearch's held-out evaluations (part of its evaluations to the winner)
    match: Match
    plain_run: PlainSearch  # every trial of the plain run (the equal-budget side is its first plain.trials)
    second_space: str | None = None  # the feature space both winners were also judged in (None: none)

    @property
    def found(self) -> bool:
        """skipsearch confirmed a winner. When it kept the baseline (its race found no win, or its second opinion
        disagreed), it reached no winner, so neither cost ratio has a skipsearch side: both are NaN and the
        repeat misses the cost targets. (Counting any plain trial no worse than the baseline as "matching" the
        baseline would make the ratio tiny for a reason that says nothing about cost.)"""
        return self.skipsearch.trial is not None

    @property
    def ratio(self) -> float:
        """Evaluations to the winner, plain / skipsearch (>= 3 is the target); NaN without a skipsearch winner."""
        if not self.found:
            return math.nan
        return self.plain.evals_to_winner / max(self.skipsearch.evals_to_winner, 1)

    @property
    def ratio_ceiling(self) -> float:
        """The largest ratio this budget allows: skipsearch's winner is known only after its confirmation, and
        the plain side cannot spend more than its total."""
        return self.plain.total_evals / max(self.confirmation_evals, 1)

    @property
    def as_good(self) -> bool:
        """skipsearch's held-out ΔFID is at most the plain side's."""
        return self.skipsearch.delta_fid <= self.plain.delta_fid

    @property
    def second_as_good(self) -> bool | None:
        """skipsearch's winner is at most the plain one in the second space too (None: no second space)."""
        if self.second_space is None:
            return None
        return self.skipsearch.second_delta_fid <= self.plain.second_delta_fid

    @property
    def met(self) -> bool:
        return self.found and self.as_good and self.ratio >= TARGET_RATIO

    @property
    def match_ratio(self) -> float:
        """Plain evaluations to a held-out winner as good as skipsearch's, over skipsearch's to its winner; when
        none matched, the lower bound (the plain run's total over skipsearch's); NaN without a skipsearch winner."""
        if not self.found:
            return math.nan
        plain = self.match.run_evals if self.match.evals is None else self.match.evals
        return plain / max(self.skipsearch.evals_to_winner, 1)

    @property
    def match_met(self) -> bool | None:
        """>= 3; None when no plain winner matched and the run was too short to say (its bound is below 3); False
        without a skipsearch winner (it reached none, so it was not cheaper to one)."""
        if not self.found:
            return False
        if self.match.evals is None and self.match_ratio < TARGET_RATIO:
            return None
        return self.match_ratio >= TARGET_RATIO


def median_or_miss(values: list[float]) -> float:
    """The median of per-repeat ratios, a repeat without a skipsearch winner (NaN) counting as 0: it reached no
    winner at any cost, the worst a ratio can say."""
    return statistics.median(0.0 if math.isnan(v) else v for v in values)


def median_match(results: list[VersusRepeat]) -> tuple[float, bool | None]:
    """The median over repeats of "plain evaluations to match skipsearch's winner / skipsearch's", and whether it
    meets the target. A repeat that no plain trial matched gives only a lower bound, so the median of the values
    with each bound taken as it is is itself a lower bound: met when it reaches the target; missed only when the
    median is below the target even with every bound taken as unlimited; otherwise unknown (None), as a single
    repeat's would be. A repeat without a skipsearch winner counts as 0 either way (``median_or_miss``)."""
    low = median_or_miss([r.match_ratio for r in results])
    high = median_or_miss([math.inf if r.found and r.match.evals is None else r.match_ratio for r in results])
    if low >= TARGET_RATIO:
        return low, True
    return low, (False if high < TARGET_RATIO else None)
