"""Judging the winners of ``skipsearch bench --versus-plain`` on held-out seed sets neither side saw, and how
far the plain loop runs before its winner is as good as skipsearch's (see ``bench.versus_plain``)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from skipsearch.bench.plain_loop import PlainSearch
from skipsearch.methods import Coefficients, method_for
from skipsearch.methods.sampled import heldout_seed_start
from skipsearch.progress import Progress
from skipsearch.spec import Spec


@dataclass(frozen=True, kw_only=True)
class Match:
    """How far the plain loop, run on past the equal budget, went before its winner was as good as skipsearch's
    on the held-out seed sets."""

    trial: int | None  # the plain trial whose win first matched skipsearch's held-out dFID (None: none did)
    delta_fid: float  # that trial's held-out dFID (NaN when none matched)
    evals: int | None  # plain evaluations through that trial (None: none matched)
    run_evals: int  # plain evaluations of the whole run (plain_budget x skipsearch's total, whole trials)
    judged: tuple[tuple[int, float], ...]  # (trial, held-out dFID) of each running best judged, in order


def heldout_ranges(spec: Spec) -> tuple[tuple[int, int], ...]:
    starts = [heldout_seed_start(spec, j) for j in range(spec.confirm.seed_sets)]
    return tuple((s, s + spec.confirm.n) for s in starts)


def first_plain_seed(spec: Spec) -> int:
    """Above every search and held-out seed of the spec: the benchmark's judging sets start here, the plain
    side's seeds above them, so neither scores a seed the study uses."""
    c, m = spec.confirm, spec.metric
    return max(m.seed + m.n, c.seed + c.n * c.seed_sets)


def mean_delta(fids: dict[int, float], baseline: dict[int, float]) -> float:
    """Mean over the seed sets both have of FID - baseline FID (paired by seed set)."""
    shared = sorted(set(fids) & set(baseline))
    if not shared:
        return math.nan
    return statistics.fmean(fids[j] - baseline[j] for j in shared)


def heldout_fids(spec: Spec, coefficients: Coefficients, desc: str = "held-out") -> dict[int, float]:
    """A candidate's held-out FID on each of the spec's seed sets, as skipsearch's confirmation computes them."""
    method, sets, out = method_for(spec.kind), spec.confirm.seed_sets, {}
    with Progress(sets, desc, "seed sets") as bar:
        for j in range(sets):
            out[j] = float(method.heldout(spec, coefficients, j).score.fid)
            bar.update(1)
    return out


def second_space_fids(spec: Spec, label: str, coefficients: Coefficients, desc: str) -> dict[int, float]:
    """A candidate's debiased FID in the second space ``label`` on each of the second opinion's seed sets of
    ``spec`` (its N and sets, ``second_opinion.plan``), as a study's second opinion computes them."""
    from skipsearch.search.second_opinion import JUDGED, opinion_spec, plan

    method, (_, sets), out = method_for(spec.kind), plan(spec), {}
    with Progress(sets, f"{desc}, {label}", "seed sets") as bar:
        for j in range(sets):
            score = method.heldout(opinion_spec(spec, label, j), coefficients, j).score
            out[j] = next(m.value for m in score.measurements if m.metric == JUDGED)
            bar.update(1)
    return out


class Judge:
    """Held-out FIDs on the benchmark's own seed sets (``judging_spec``), each set of coefficients computed once:
    the baseline serves every repeat, and the plain side's equal-budget winner is usually one of its running
    bests too. With a ``second`` space, also each winner's debiased FID there, as a study's second opinion takes
    it: a winner found by minimising FID in one space is checked in another, on both sides alike."""

    def __init__(self, spec: Spec, second: str | None = None):
        self.spec, self.second = spec, second
        self.fids: dict[str, dict[int, float]] = {}
        self.second_fids: dict[str, dict[int, float]] = {}

    def second_delta(self, coefficients: Coefficients, baseline: Coefficients, desc: str) -> float:
        """Paired debiased dFID against the baseline in the second space (NaN without one)."""
        if self.second is None:
            return math.nan
        for c, d in ((coefficients, desc), (baseline, "second space, baseline")):
            if (key := c.model_dump_json()) not in self.second_fids:
                self.second_fids[key] = second_space_fids(self.spec, self.second, c, d)
        return mean_delta(self.second_fids[coefficients.model_dump_json()],
                          self.second_fids[baseline.model_dump_json()])

    def heldout(self, coefficients: Coefficients, desc: str) -> dict[int, float]:
        key = coefficients.model_dump_json()
        if key not in self.fids:
            self.fids[key] = heldout_fids(self.spec, coefficients, desc)
        return self.fids[key]

    def delta(self, coefficients: Coefficients, baseline: Coefficients, desc: str) -> float:
        return mean_delta(self.heldout(coefficients, desc), self.heldout(baseline, "held-out, baseline"))


def judging_spec(spec: Spec) -> Spec:
    """The spec whose held-out seed sets judge both winners: as many sets of ``confirm.n`` as the spec's
    confirmation, from the first seed above every search and held-out seed of the spec, so that neither side
    chose its winner on them (skipsearch's confirmation picks the best of its top-k on its own sets, which
    would flatter its winner there)."""
    return spec.model_copy(update={"confirm": spec.confirm.model_copy(update={"seed": first_plain_seed(spec)})})


def match_skipsearch(spec: Spec, plain: PlainSearch, target: float | None,
                     judge_delta: Callable[[int], float]) -> Match:
    """Walk the plain loop's running best in order, judging each on the held-out sets, until one's held-out dFID
    is at most ``target`` (skipsearch's). ``target`` None (skipsearch kept the baseline): nothing to match, so
    nothing is judged."""
    per_trial = spec.confirm.n * spec.sampler.config().nfe
    judged: list[tuple[int, float]] = []
    if target is None:
        return Match(trial=None, delta_fid=math.nan, evals=None, judged=(), run_evals=len(plain.values) * per_trial)
    for t in plain.running_best():
        delta = judge_delta(t)
        judged.append((t, delta))
        if delta <= target:
            return Match(trial=t, delta_fid=delta, evals=(t + 1) * per_trial, judged=tuple(judged),
                         run_evals=len(plain.values) * per_trial)
    return Match(trial=None, delta_fid=math.nan, evals=None, judged=tuple(judged),
                 run_evals=len(plain.values) * per_trial)
