"""A raced confirmation's race, replayed from the stored held-out rows: what ``confirm`` runs round by round and
what every reader (the summary, the verdict, ``best``, the report) judges the same way.

The race's rules are ``search.race``'s; this module only feeds them. Its plan comes from the spec
(``confirm.seed_sets`` rounds at most, a look every ``confirm.every``, ``confirm.procedure``, the candidates
that entered); each round's paired ΔFID is the debiased FID (``metrics.fid_debiased``, what the held-out
evaluations of a raced study measure beside FID) of a candidate minus the baseline's, on the same seed set. The
race is replayed from the start whenever it is read, so a resumed confirmation, a second driver and a reader
all see the same decisions: nothing of the race is stored but the held-out rows themselves and, when it
starts, who entered it (``ENTRANTS``, an extra of the baseline): a search that goes on later, or a candidate
whose first evaluation failed, never changes the race's candidates.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from skipsearch.search.race import Decision, RacePlan, RaceState, decide
from skipsearch.search.sequential import SequentialInterval

JUDGED = "fid_debiased"  # the metric each round's ΔFID is of (``methods.sampled.RACE_JUDGES``)
STAGE = "race"  # the stage of the race's own extra
ENTRANTS = "race_entrants"  # the baseline's extra: {"baseline": trial, "candidates": [trials]} at confirm.n


def stored_entrants(extras: pd.DataFrame, n: int) -> tuple[int, list[int]] | None:
    """The baseline and the candidates of the race at ``n``, as stored when it started (None: a race from
    before they were stored, or none started)."""
    from skipsearch.search.measured import stored_extra

    value = stored_extra(extras, STAGE, ENTRANTS, n)
    return None if value is None else (int(value["baseline"]), [int(t) for t in value["candidates"]])


def plan_of(confirm, candidates: int) -> RacePlan:
    """The race a spec's ``confirm`` section plans for ``candidates`` search trials."""
    return RacePlan(max_rounds=confirm.seed_sets, candidates=max(candidates, 1), procedure=confirm.procedure,
                    every=min(confirm.every, confirm.seed_sets))


@dataclass(frozen=True, kw_only=True)
class Replay:
    """How far the race has got on the stored rows: each judged round's decision, who is still in, and for
    every candidate its last interval and, if it left, when and why."""

    plan: RacePlan
    baseline: int
    candidates: tuple[int, ...]
    rounds: int  # seed sets every racing candidate and the baseline have (the next round's index)
    racing: tuple[int, ...]
    decisions: tuple[Decision, ...] = ()
    left: Mapping[int, tuple[int, str]] = field(default_factory=dict)  # candidate -> (round, why)
    intervals: Mapping[int, SequentialInterval] = field(default_factory=dict)  # each one's latest

    @property
    def last(self) -> Decision | None:
        """The latest judged round's decision (None before the first look)."""
        return self.decisions[-1] if self.decisions else None

    @property
    def done(self) -> bool:
        """The race has ended: its latest look said so, or every round was run."""
        return (self.last is not None and self.last.done) or self.rounds >= self.plan.max_rounds

    @property
    def winner(self) -> int | None:
        """The candidate the race claims (a win), else the best one still in at its end (None: no look yet)."""
        return None if self.last is None else self.last.winner

    @property
    def win(self) -> bool:
        return self.last is not None and self.last.win


def replay(plan: RacePlan, baseline: int, candidates: Sequence[int], judged: Mapping[tuple[int, int], float],
           failed: Collection[tuple[int, int]] = ()) -> Replay:
    """Run the race on ``judged`` (trial, seed set) -> debiased FID as far as complete rounds go. A round is
    complete when the baseline and every racing candidate have a value or a known failure (``failed``: a
    candidate whose evaluation failed has no row; its ΔFID is NaN, and it leaves)."""
    state = RaceState.start(candidates) if candidates else None
    decisions, left, intervals, rounds = [], {}, {}, 0
    while state is not None and rounds < plan.max_rounds:
        j = rounds
        if (baseline, j) not in judged or any((c, j) not in judged and (c, j) not in failed for c in state.racing):
            break
        base = judged[(baseline, j)]
        deltas = {c: judged[(c, j)] - base if (c, j) in judged else math.nan for c in state.racing}
        state = state.add_round(deltas)
        rounds += 1
        decision = decide(plan, state)
        if plan.is_look(rounds) or decision.leaving:
            decisions.append(decision)
        intervals |= dict(decision.intervals)
        left |= {g.candidate: (rounds, g.why) for g in decision.leaving}
        if decision.done:
            return Replay(plan=plan, baseline=baseline, candidates=tuple(candidates), rounds=rounds,
                          racing=decision.racing, decisions=tuple(decisions), left=left, intervals=intervals)
        state = state.after(decision)
    return Replay(plan=plan, baseline=baseline, candidates=tuple(candidates), rounds=rounds,
                  racing=state.racing if state is not None else (), decisions=tuple(decisions), left=left,
                  intervals=intervals)


def judged_values(conf: pd.DataFrame, extractor: str) -> dict[tuple[int, int], float]:
    """(trial, seed set) -> the judged number, from the per-seed-set confirmations frame with its reported
    columns (``frames.confirmations(per_seed_set=True)``'s ``fid_debiased@EXTRACTOR``)."""
    name = f"{JUDGED}@{extractor}"
    if conf.empty or name not in conf.columns:
        return {}
    rows = conf[conf[name].notna()]
    return {(int(t), int(j)): float(v) for t, j, v in zip(rows.trial_number, rows.seed_set, rows[name])}


def failures_between(judged: Mapping[tuple[int, int], float], trials: Sequence[int]) -> set[tuple[int, int]]:
    """The (trial, seed set) evaluations that must have failed: none stored, though a later seed set of the same
    confirmation was (a failed held-out evaluation writes no row, and the race went on without it)."""
    if not judged:
        return set()
    last = max(j for _, j in judged)
    return {(t, j) for t in trials for j in range(last) if (t, j) not in judged}


def stored_judged(store, spec) -> dict[tuple[int, int], float]:
    """What the race judges, per (trial, seed set), from the study's stored held-out rows at ``confirm.n``: what
    ``confirm`` races on and every reader replays."""
    from skipsearch.search.measured import reported

    wide = reported(store, spec.name, "confirmation", spec.metric.extractor)
    if not wide.empty:
        wide = wide[wide.n == spec.confirm.n]
    return judged_values(wide, spec.metric.extractor)
