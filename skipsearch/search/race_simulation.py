"""Many synthetic races under one plan: how often a win is claimed (and wrongly), whether the claimed intervals
hold the truth, what the races cost. The simulated races run ``race._judge``, the rule ``race.decide`` applies to
a real race, one numpy batch per round: the rule measured is the rule used, not a copy of it. What the tests and
the calibration figures in the README are computed with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skipsearch.search.race import RacePlan, _judge
from skipsearch.search.sequential import LEVEL


def clopper_pearson(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval on a rate: what a claimed-win rate or a coverage is reported
    with, since a rate from a few thousand races is itself an estimate. Beta quantiles from scipy.special."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, not {successes}/{trials}")
    from scipy.special import betaincinv

    a = (1 - level) / 2
    low = 0.0 if successes == 0 else float(betaincinv(successes, trials - successes + 1, a))
    high = 1.0 if successes == trials else float(betaincinv(successes + 1, trials - successes, 1 - a))
    return low, high


@dataclass(frozen=True, kw_only=True)
class Simulation:
    """What many synthetic races under one plan did: how often a win was claimed (and wrongly: for a
    candidate whose true ΔFID is not below 0), how often the claimed interval held the winner's true ΔFID,
    how many rounds and evaluations they took, and how often each candidate left early."""

    plan: RacePlan
    effects: tuple[float, ...]
    sd: float
    races: int
    wins: int
    false_wins: int
    covered: int  # claimed intervals containing the winner's true ΔFID
    rounds: tuple[int, ...]  # rounds[k]: races that ended after k seed sets
    win_rounds: tuple[int, ...]  # win_rounds[k]: races that ended with a win after k seed sets
    evaluations: float  # mean held-out evaluations per race, the baseline's included
    left_early: tuple[float, ...]  # per candidate: share of races it left before the race ended

    @property
    def win_rate(self) -> float:
        return self.wins / self.races

    @property
    def win_rate_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.wins, self.races, self.plan.level)

    @property
    def false_win_rate(self) -> float:
        return self.false_wins / self.races

    @property
    def false_win_rate_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.false_wins, self.races, self.plan.level)

    @property
    def coverage(self) -> float:
        """Share of claimed intervals that contain the truth (NaN when no win was claimed). Not what the
        procedure guarantees: among claims alone it can fall below ``level`` when wins are rare (on the null
        it is 0); it is high where the effect is clear. See ``miss_rate``."""
        return self.covered / self.wins if self.wins else math.nan

    @property
    def miss_rate(self) -> float:
        """Share of all races that claimed an interval missing the truth: the procedure bounds this by
        ``1 - level`` whatever the effects."""
        return (self.wins - self.covered) / self.races

    @property
    def miss_rate_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.wins - self.covered, self.races, self.plan.level)

    @property
    def coverage_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.covered, self.wins, self.plan.level) if self.wins else (0.0, 1.0)

    @property
    def median_rounds(self) -> int:
        """The round by which half the races had ended."""
        return int(np.searchsorted(np.cumsum(self.rounds), self.races / 2))

    def wins_by(self, k: int) -> float:
        """Share of all races that ended with a win after at most ``k`` seed sets."""
        return sum(self.win_rounds[: k + 1]) / self.races

    @property
    def fixed_evaluations(self) -> int:
        """What the same plan costs without racing: every candidate and the baseline on every seed set."""
        return (self.plan.candidates + 1) * self.plan.max_rounds

    def __str__(self) -> str:
        lo, hi = self.win_rate_interval
        cov = f"{self.coverage:.3f}" if self.wins else "n/a"
        return (f"{self.plan.procedure}: {self.races} races, effects {list(self.effects)} (sd {self.sd}), claimed "
                f"wins {self.win_rate:.4f} [{lo:.4f}, {hi:.4f}], false wins {self.false_win_rate:.4f}, coverage "
                f"{cov}, median rounds {self.median_rounds:.0f} of {self.plan.max_rounds}, evaluations "
                f"{self.evaluations:.1f} of {self.fixed_evaluations}")


@dataclass(frozen=True)
class Races:
    """How a batch of races on given data ended (B races, m candidates): ``win``, ``winner`` (candidate
    index, meaningful where ``win``), the claimed interval ``low``/``high``, the round each ``ended`` at,
    the held-out ``evaluations`` each spent (the baseline's included) and who was still ``racing`` at the
    end."""

    win: np.ndarray
    winner: np.ndarray
    low: np.ndarray
    high: np.ndarray
    ended: np.ndarray
    evaluations: np.ndarray
    racing: np.ndarray


def run_races(plan: RacePlan, deltas: np.ndarray) -> Races:
    """Race every row of ``deltas`` (B, m, max_rounds: paired ΔFID of candidate c on seed set j) to its end,
    one numpy batch per round through the same ``_judge`` as ``decide``: the simulated races are the real
    rule, not a copy of it. Rounds a race never reached are simply not read."""
    races, m, last = deltas.shape
    if m != plan.candidates or last != plan.max_rounds:
        raise ValueError(f"deltas of shape {deltas.shape} for a plan of {plan.candidates} candidates and "
                         f"{plan.max_rounds} rounds")
    racing, active = np.ones((races, m), dtype=bool), np.ones(races, dtype=bool)
    win, winner = np.zeros(races, dtype=bool), np.zeros(races, dtype=int)
    low, high = np.full(races, np.nan), np.full(races, np.nan)
    ended, evaluations = np.full(races, last), np.zeros(races)
    for k in range(1, last + 1):
        evaluations[active] += racing[active].sum(-1) + 1
        if not plan.is_look(k):
            continue
        rows = np.flatnonzero(active)
        j = _judge(plan, deltas[rows, :, :k], racing[rows])
        racing[rows] = j.still
        stop, at = rows[j.done], np.flatnonzero(j.done)
        win[stop], winner[stop], ended[stop] = j.win[at], j.winner[at], k
        low[stop], high[stop] = j.low[at, j.winner[at]], j.high[at, j.winner[at]]
        active[stop] = False
        if not active.any():
            break
    return Races(win=win, winner=winner, low=low, high=high, ended=ended, evaluations=evaluations, racing=racing)


def simulate(plan: RacePlan, effects: Sequence[float], *, races: int = 2000, sd: float = 1.0,
             baseline_share: float = 0.5, seed: int = 0) -> Simulation:
    """Run ``races`` synthetic races under ``plan`` (``run_races``). Candidate c's paired ΔFID on a seed set
    is ``effects[c]`` plus normal noise of standard deviation ``sd``, of which a share ``baseline_share`` of
    the variance is the baseline's draw on that seed set, common to every candidate (common random numbers:
    the deltas are correlated through it). Seeded, so a calibration table can be reproduced."""
    if len(effects) != plan.candidates:
        raise ValueError(f"{len(effects)} effects for a plan of {plan.candidates} candidates")
    if not 0 <= baseline_share < 1 or sd <= 0 or races < 1:
        raise ValueError("need 0 <= baseline_share < 1, sd > 0 and races >= 1")
    rng = np.random.default_rng(seed)
    m, last = plan.candidates, plan.max_rounds
    truth = np.asarray(effects, dtype=float)
    base = rng.normal(0.0, sd * math.sqrt(baseline_share), (races, 1, last))
    own = rng.normal(0.0, sd * math.sqrt(1 - baseline_share), (races, m, last))
    r = run_races(plan, truth[None, :, None] + own - base)
    claimed = truth[r.winner]
    covered = r.win & (r.low <= claimed) & (claimed <= r.high)
    return Simulation(plan=plan, effects=tuple(float(e) for e in truth), sd=sd, races=races, wins=int(r.win.sum()),
                      false_wins=int((r.win & (claimed >= 0)).sum()), covered=int(covered.sum()),
                      rounds=tuple(int(c) for c in np.bincount(r.ended, minlength=last + 1)),
                      win_rounds=tuple(int(c) for c in np.bincount(r.ended[r.win], minlength=last + 1)),
                      evaluations=float(r.evaluations.mean()),
                      left_early=tuple(float(v) for v in (~r.racing).mean(0)))  # a winner is still racing
