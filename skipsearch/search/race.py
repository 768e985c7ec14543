"""Racing the held-out confirmation: the statistics that decide it, round by round, and a simulator that
measures them. Pure numpy (scipy's t quantile on first use): no torch, no store, no Optuna.

The race. The baseline and the candidates (in the search's order) are evaluated on held-out seed set after
seed set, all of them on the same seeds (common random numbers), so each candidate has one paired ΔFID per
seed set (its FID minus the baseline's on that set). After every round from the second on (one seed set has
no spread) the race is judged:

1. each racing candidate gets an interval on its mean ΔFID from the plan's procedure (``sequential``: by
   default a Student t interval with Bonferroni over the candidates that entered and over the planned looks);
2. a candidate leaves when it is clearly worse than the current best (the racing candidate with the lowest
   mean ΔFID): the interval, at the same corrected level, of its ΔFID minus the best's on their common seed
   sets lies wholly above 0; or when its own interval lies wholly above 0 (worse than the baseline); or when it
   cannot be shown better within the plan (futility): even a hopeful value of its ΔFID, the low end of a plain
   ``level`` t interval, is above minus the half-width the procedure would give at the planned last round with
   its present spread, so an interval at the last round would still be likely to contain 0;
3. the race ends with a win when a remaining candidate's interval lies wholly below 0 (the one with the lowest
   mean among such, if several); without one when no candidate remains (all are indistinguishable from the
   baseline or worse); and without one at the planned maximum of rounds.

Why the win is honest. The procedure makes every interval of every candidate (whether still racing or not)
at every planned look cover its true ΔFID at once with probability at least ``level`` (Bonferroni over the
candidates at the first look and the looks; the confidence sequence over the candidates only). A claimed win
is one of those intervals, chosen by the data, so its coverage and the rate of false wins (a candidate no
better than the baseline declared better) keep the 95% claim however the race stopped and whichever candidate
it picked. (That bounds the share of *all* races that claim an interval missing the truth; the share of
*claimed* intervals that cover is high where the effect is clear, but a weak effect that is rarely claimed can
be claimed on lucky draws, and then it may fall below 95%: ``race_simulation.simulate`` measures both.)
Eliminations and the stop for futility use the data too, but they can only end a race without a
win or remove a candidate, never make an interval narrower, so they cost power, never validity. An
elimination on its own (c worse than the best) is not claimed at 95%: the best is picked by the data and the
pairwise comparisons are not in the correction; dropping a good candidate by mistake only loses the chance to
claim it. ``race_simulation`` measures both claims on synthetic races; the tests hold them to the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from skipsearch.errors import FieldError
from skipsearch.search.sequential import LEVEL, PROCEDURES, SequentialInterval, t_factor

Reason = Literal["continue", "win", "no-better", "max-rounds"]


@dataclass(frozen=True, kw_only=True)
class RacePlan:
    """What is fixed before the first held-out seed set: the most rounds (the planned looks), how many
    candidates enter (the multiplicity), the simultaneous level and the procedure. Fixing them first is what
    lets the corrected intervals be honest; a mistake in them names the field, as a spec's would."""

    max_rounds: int
    candidates: int
    level: float = LEVEL
    procedure: str = "bonferroni"
    every: int = 1  # judge after every ``every``-th round (and the last): fewer looks, narrower intervals

    def __post_init__(self) -> None:
        if self.procedure not in PROCEDURES:
            raise FieldError("procedure", f"procedure {self.procedure!r} is not one of {sorted(PROCEDURES)}")
        if not 0 < self.level < 1:
            raise FieldError("level", f"level must lie strictly between 0 and 1, not {self.level}")
        if self.candidates < 1:
            raise FieldError("candidates", f"candidates must be at least 1, not {self.candidates}")
        if self.max_rounds < 2:
            raise FieldError("max_rounds", f"max_rounds must be at least 2 (a paired interval needs two seed "
                             f"sets), not {self.max_rounds}")
        if not 1 <= self.every <= self.max_rounds:
            raise FieldError("every", f"every must be between 1 and max_rounds ({self.max_rounds}), not {self.every}")

    def is_look(self, k: int) -> bool:
        """Whether the race is judged after round ``k``: every ``every``-th round from the second, and the last."""
        return k >= 2 and (k % self.every == 0 or k == self.max_rounds)

    @property
    def looks(self) -> int:
        """The planned looks that can give an interval, which the Bonferroni split shares the error over."""
        return sum(self.is_look(k) for k in range(1, self.max_rounds + 1))

    @property
    def alpha(self) -> float:
        return 1 - self.level

    def factor(self, k: int) -> float:
        """Half-width over the sample sd at look ``k`` (``inf`` before an interval exists)."""
        return PROCEDURES[self.procedure].factor(k, self.max_rounds, self.looks, self.alpha, self.candidates)

    @property
    def says(self) -> str:
        """The correction in words, for the verdict and the README."""
        return PROCEDURES[self.procedure].says(self.looks, self.candidates)


@dataclass(frozen=True, kw_only=True)
class RaceState:
    """The paired ΔFIDs so far: ``deltas[c][j]`` is candidate c's FID minus the baseline's on seed set j, for
    the seed sets it ran (a candidate that left has fewer); ``racing`` are those still in, in entry order."""

    deltas: Mapping[int, tuple[float, ...]]
    racing: tuple[int, ...]

    @classmethod
    def start(cls, candidates: Sequence[int]) -> RaceState:
        """No seed set yet; every candidate (a trial number) in the race."""
        if len(set(candidates)) != len(candidates) or not candidates:
            raise ValueError(f"a race needs distinct candidates, not {list(candidates)}")
        return cls(deltas={int(c): () for c in candidates}, racing=tuple(int(c) for c in candidates))

    @property
    def rounds(self) -> int:
        """Seed sets the racing candidates share (all of them ran every round)."""
        return len(self.deltas[self.racing[0]]) if self.racing else 0

    def add_round(self, deltas: Mapping[int, float]) -> RaceState:
        """One more seed set's paired ΔFID for exactly the racing candidates (NaN: its evaluation failed)."""
        if set(deltas) != set(self.racing):
            raise ValueError(f"a round needs the racing candidates {list(self.racing)}, got {sorted(deltas)}")
        grown = {c: d + ((float(deltas[c]),) if c in deltas else ()) for c, d in self.deltas.items()}
        return replace(self, deltas=grown)

    def after(self, decision: Decision) -> RaceState:
        """The state for the next round: the candidates that left this one are out."""
        gone = {leave.candidate for leave in decision.leaving}
        return replace(self, racing=tuple(c for c in self.racing if c not in gone))


@dataclass(frozen=True, kw_only=True)
class Leaving:
    """A candidate that leaves the race this round, and why in words."""

    candidate: int
    why: str


@dataclass(frozen=True, kw_only=True)
class Decision:
    """One round's judgement: each racing candidate's interval against the baseline, who leaves, who races
    on, and whether the race ends (``reason``), with a sentence that says so."""

    round: int
    intervals: Mapping[int, SequentialInterval]
    best: int | None
    leaving: tuple[Leaving, ...]
    racing: tuple[int, ...]
    done: bool
    win: bool
    winner: int | None
    reason: Reason
    text: str
    interval: SequentialInterval | None = field(default=None)  # the winner's (or the best's) at this round


@dataclass(frozen=True)
class _Judged:
    """The batch form of one round's judgement (B races, m candidates); what ``decide`` and
    ``race_simulation.run_races`` share, so the simulated races are the real rule, not a copy of it."""

    mean: np.ndarray  # (B, m)
    low: np.ndarray
    high: np.ndarray
    best: np.ndarray  # (B,) index of the lowest racing mean (0 where none races)
    worse_than_best: np.ndarray  # (B, m)
    worse_than_baseline: np.ndarray
    futile: np.ndarray
    still: np.ndarray  # (B, m) racing after the eliminations
    win: np.ndarray  # (B,)
    winner: np.ndarray  # (B,) index of the claimed candidate (meaningful where win)
    done: np.ndarray  # (B,)


def _half(factor: float, sd: np.ndarray) -> np.ndarray:
    """``factor * sd``, but infinite where the factor is (no interval yet), even for a zero spread."""
    return np.full_like(sd, np.inf) if not math.isfinite(factor) else factor * sd


def _judge(plan: RacePlan, d: np.ndarray, racing: np.ndarray) -> _Judged:
    """Judge round k = ``d.shape[-1]`` (k >= 2) for a batch: ``d`` (B, m, k) paired ΔFIDs (values of
    candidates not racing are ignored), ``racing`` (B, m) who is still in."""
    batch, m, k = d.shape
    f, f_last = plan.factor(k), plan.factor(plan.max_rounds)
    x = np.where(racing[..., None], d, 0.0)
    mean, sd = x.mean(-1), x.std(-1, ddof=1)
    low, high = mean - _half(f, sd), mean + _half(f, sd)
    best = np.where(racing, mean, np.inf).argmin(-1)
    diff = x - x[np.arange(batch), best][:, None, :]  # c minus the best, seed set by seed set
    diff_low = diff.mean(-1) - _half(f, diff.std(-1, ddof=1))
    others = racing & (np.arange(m)[None, :] != best[:, None])
    worse_than_best = others & (diff_low > 0)
    worse_than_baseline = racing & ~worse_than_best & (low > 0)
    # futility: a hopeful value (a plain t interval's low end) would not clear the last look's half-width
    hopeful = mean - _half(t_factor(k, plan.alpha), sd)
    futile = racing & ~worse_than_best & ~worse_than_baseline & (k < plan.max_rounds) & (hopeful >= -f_last * sd)
    still = racing & ~(worse_than_best | worse_than_baseline | futile)
    proven = still & (high < 0)
    win = proven.any(-1)
    winner = np.where(proven, mean, np.inf).argmin(-1)
    done = win | ~still.any(-1) | (k >= plan.max_rounds)
    return _Judged(mean=mean, low=low, high=high, best=best, worse_than_best=worse_than_best,
                   worse_than_baseline=worse_than_baseline, futile=futile, still=still, win=win, winner=winner,
                   done=done)


def decide(plan: RacePlan, state: RaceState) -> Decision:
    """Judge the race after its latest round: who leaves, and whether it ends (a win, no candidate left
    that could still be shown better, or the planned maximum) — with the reason as a sentence."""
    k, racing = state.rounds, state.racing
    if len(state.deltas) > plan.candidates:
        raise ValueError(f"{len(state.deltas)} candidates raced but the plan corrects for {plan.candidates}")
    failed = tuple(c for c in racing if any(math.isnan(v) for v in state.deltas[c]))
    judged = tuple(c for c in racing if c not in failed)
    gone = tuple(Leaving(candidate=c, why="its held-out evaluation failed") for c in failed)
    if not plan.is_look(k) or not judged:
        return _before_intervals(plan, k, judged, gone)
    j = _judge(plan, np.array([[state.deltas[c] for c in judged]], dtype=float), np.ones((1, len(judged)), bool))
    intervals = {c: SequentialInterval(mean=float(j.mean[0, i]), k=k, low=float(j.low[0, i]),
                                       high=float(j.high[0, i]), level=plan.level) for i, c in enumerate(judged)}
    best = judged[int(j.best[0])]
    for i, c in enumerate(judged):
        if j.worse_than_best[0, i]:
            gone += (Leaving(candidate=c, why=f"clearly worse than trial {best}, paired seed set by seed set"),)
        elif j.worse_than_baseline[0, i]:
            gone += (Leaving(candidate=c, why="clearly worse than the baseline"),)
        elif j.futile[0, i]:
            gone += (Leaving(candidate=c, why=f"cannot be shown better than the baseline within the planned "
                                              f"{plan.max_rounds} seed sets"),)
    still = tuple(c for i, c in enumerate(judged) if j.still[0, i])
    win = bool(j.win[0])
    # the claimed candidate; without a win, the lowest mean of those still in (or of all, if none is)
    winner = judged[int(j.winner[0])] if win else min(still or judged, key=lambda c: intervals[c].mean)
    reason: Reason = ("win" if win else "no-better" if not still else "max-rounds" if j.done[0] else "continue")
    decision = Decision(round=k, intervals=intervals, best=best, leaving=gone, racing=still, done=bool(j.done[0]),
                        win=win, winner=winner, reason=reason, text="", interval=intervals[winner])
    return replace(decision, text=_sentence(plan, decision))


def _before_intervals(plan: RacePlan, k: int, judged: tuple[int, ...], gone: tuple[Leaving, ...]) -> Decision:
    """A round that is not a look (one seed set has no interval; between planned looks), or with every candidate
    failed: nothing is judged."""
    done = not judged or k >= plan.max_rounds
    decision = Decision(round=k, intervals={}, best=None, leaving=gone, racing=judged, done=done, win=False,
                        winner=None, reason="no-better" if not judged else "max-rounds" if done else "continue",
                        text="")
    return replace(decision, text=_sentence(plan, decision))


def _sets(k: int) -> str:
    return f"{k} held-out seed set{'s' if k != 1 else ''}"


def _racing(d: Decision) -> str:
    return "1 candidate races on" if len(d.racing) == 1 else f"{len(d.racing)} candidates race on"


def _sentence(plan: RacePlan, d: Decision) -> str:
    """The round's outcome in the words a user reads at the end of a run or in the log."""
    left = "; ".join(f"trial {g.candidate} left: {g.why}" for g in d.leaving)
    left = f" ({left})" if left else ""
    how = f"{plan.level:.0%} interval, corrected for the race's looks and candidates: {plan.says}"
    if d.reason == "win":
        return (f"Trial {d.winner} beats the baseline after {_sets(d.round)}: ΔFID {d.interval} ({how}) lies "
                f"wholly below 0, so the race ends with a win{left}.")
    if d.reason == "no-better":
        return (f"After {_sets(d.round)} no candidate can still be shown better than the baseline{left}: the race "
                f"ends without a win.")
    if d.reason == "max-rounds":
        best = f": the best, trial {d.winner}, has ΔFID {d.interval} ({how})" if d.interval else ""
        return (f"The race reached its planned maximum of {_sets(plan.max_rounds)} without a win{best}, "
                f"not distinguishable from the baseline{left}.")
    if d.round < 2:
        return (f"After {_sets(d.round)} there is no interval yet (a paired interval needs two seed sets); "
                f"{_racing(d)}{left}.")
    if d.best is None:
        nxt = next(k for k in range(d.round + 1, plan.max_rounds + 1) if plan.is_look(k))
        return f"After {_sets(d.round)} {_racing(d)}; the next look is after {_sets(nxt)}{left}."
    return (f"After {_sets(d.round)} {_racing(d)}; the "
            f"best, trial {d.best}, has ΔFID {d.intervals[d.best]} ({how}){left}.")
