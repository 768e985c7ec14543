"""``skipsearch bench --calibration``: how often each rule claims a win that is not there, and whether the
intervals it claims hold the truth, measured on many short studies with REAL samples of the embedded model.

Two rules are judged on the same evaluations:

- **skipsearch**: the raced confirmation, the real rules of ``search.race`` (``RaceState``, ``decide``; the
  same decisions ``search.racing.replay`` makes on the same numbers) under a Bonferroni ``RacePlan``, judged
  on the per-seed-set debiased FID (``metrics.fid_debiased``, what a raced confirmation judges) of each
  candidate minus the baseline's, on held-out seed sets. A win claims the winner's interval.
- **plain**: "the best trial beats the baseline", what a hand-written Optuna loop reports: each candidate
  scored once on N samples of its own seeds, the baseline once on its own, and a win claimed when the lowest
  candidate FID is below the baseline's. Its claim is a point (that FID difference), never an interval.

**Why not the issue's nulls.** Coefficients that provably do not change the samples (rho = 1), or the baseline
entered again as a candidate, draw *identical* images on every seed set under common random numbers: every
paired ΔFID is exactly 0, so the race never sees an interval below 0 and the plain loop's ``min < baseline``
is never true (a tie). Both rules would score a perfect 0% on such a null, which measures nothing. The null
here is informative instead: a candidate that is the baseline model sampled on a **shifted noise stream**
(candidate c's seeds are the baseline's plus ``c * NULL_OFFSET``). Its sample distribution is the baseline's
exactly, so its true ΔFID (the ΔFID at infinitely many samples) is 0, but its images differ, so its per-set
ΔFID is noise, as a useless coefficient's is in practice. A claimed win for it is a false win by
construction, with no estimate of the truth involved.

**The known-effect space** races a fixed Skip-Tuning schedule with a real effect (the 19-NFE README demo's linear
winner, rho_top 1.033, rho_bottom 1.318) against the baseline on the same seeds (paired, as a study does),
optionally with null candidates beside it. Its truth is measured once, afterwards, as the mean paired debiased
ΔFID over ``truth_sets`` fresh seed sets no study used (its standard error is reported: the coverage below is
against this estimate, so a truth error small against the claimed intervals' half-widths is what makes it
meaningful). Coverage is the share of claimed intervals that contain the claimed candidate's truth (0 for a
null candidate). The plain loop claims a point, so it gets no coverage; its error (claim minus truth: the
selection bias of the best of K, plus the 1/N bias of a plain FID) is reported instead.

**What each study uses.** Study i of a space uses its own block of ``max_rounds`` seed sets, so studies are
independent and the Clopper-Pearson intervals on the rates (``race_simulation.clopper_pearson``) are exact. An
evaluation is made only when a rule reads it and is cached by (stream, seed set): the race stops early, and
the plain loop reads round 0's evaluations of the null space (its search seeds are a fresh set the race
also uses; each rule's rate is still over independent studies, the two rules' numbers are simply paired). On
the null the plain rule's claim rate is known in advance: K independent draws of the same distribution beat
one more draw of it with probability K / (K + 1) (exchangeability), which the run checks.

The setup is small on purpose (N = 64 samples per set, Heun with 5 steps, the digits feature space) so that
a few hundred studies run in minutes on a CPU; the rules are the same at any N.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from skipsearch.bench.calibration_results import (PLAIN_EFFECT_STREAM, Calibration, CalibrationSetup, RuleResult,
                                                   Truth)
from skipsearch.bench.measurements import Record
from skipsearch.progress import Progress
from skipsearch.search.race import Decision, RacePlan, RaceState, decide

NULL_OFFSET = 200_000_000  # seed shift per stream index: far above every seed set any study here uses
EFFECT_BLOCK = 100_000  # first seed set of the known-effect studies (the null studies start at 0)
TRUTH_BLOCK = 200_000  # first seed set of the truth's fresh sets


@dataclass(frozen=True, kw_only=True)
class Stream:
    """What one evaluation samples: the baseline model, or with the effect schedule on (``effect``), on the
    seeds shifted by ``shift * NULL_OFFSET`` (0: the baseline's own seeds, paired)."""

    effect: bool = False
    shift: int = 0


# (fid, debiased fid) of ``n`` samples of a stream from a first seed
Measure = Callable[[Stream, int], tuple[float, float]]


class Evaluations:
    """Sampling and scoring through the real ``Evaluator`` (the model, the sampler, the feature extractor and
    the reference a study uses), cached per (stream, seed set) so that no rule pays twice for a number."""

    def __init__(self, setup: CalibrationSetup, measure: Measure | None = None):
        self.setup = setup
        self.cache: dict[tuple[Stream, int], tuple[float, float]] = {}
        self._measure = measure or _evaluator_measure(setup)

    def seeds(self, stream: Stream, seed_set: int) -> int:
        """The first seed of ``seed_set`` on ``stream``: disjoint sets of n seeds, shifted per stream."""
        return seed_set * self.setup.n + stream.shift * NULL_OFFSET

    def __call__(self, stream: Stream, seed_set: int) -> tuple[float, float]:
        key = (stream, seed_set)
        if key not in self.cache:
            self.cache[key] = self._measure(stream, self.seeds(stream, seed_set))
        return self.cache[key]

    def debiased(self, stream: Stream, seed_set: int) -> float:
        return self(stream, seed_set)[1]

    def plain(self, stream: Stream, seed_set: int) -> float:
        return self(stream, seed_set)[0]


def _evaluator_measure(setup: CalibrationSetup) -> Measure:
    """The real pipeline: ``Evaluator.sample`` with the schedule's hooks (``SkipTuning.apply``, as a held-out
    evaluation applies them) or without, ``Evaluator.features``, then FID and the debiased FID against the
    reference. KID is left out: neither rule reads it, and it would cost more than the distances."""
    from skipsearch.diffusion.generation import SamplerConfig
    from skipsearch.evaluate import EvalTask, evaluator_for
    from skipsearch.methods import method_for
    from skipsearch.methods.skip_tuning.schedules import LinearSkip
    from skipsearch.metrics.distance import fid
    from skipsearch.metrics.fid_debiased import fid_debiased
    from skipsearch.timing import Stopwatch

    task = EvalTask(model=setup.model, sampler=SamplerConfig(name="heun", steps=setup.steps),
                    extractor=setup.extractor, dataset=setup.reference, n=setup.n, seed_start=0,
                    batch_size=setup.batch_size, kid_subset_size=min(32, setup.n))
    ev = evaluator_for(task)
    method = method_for("skip_tuning")
    schedule = LinearSkip(rho_top=setup.rho_top, rho_bottom=setup.rho_bottom)

    def measure(stream: Stream, start: int) -> tuple[float, float]:
        watch = Stopwatch()
        seeds = range(start, start + setup.n)
        if stream.effect:
            with method.apply(ev.loaded.denoiser, schedule, None):
                images = ev.sample(task, seeds, watch)
        else:
            images = ev.sample(task, seeds, watch)
        feats = ev.features(images, task, watch)[ev.extractor.name]
        return fid(feats, ev.reference.stats), fid_debiased(feats, ev.reference.stats)

    return measure


@dataclass(frozen=True, kw_only=True)
class RaceOutcome:
    """One race: its decisions, whether it claimed a win, whom, and the claimed interval."""

    decisions: tuple[Decision, ...]
    win: bool
    winner: int | None
    low: float
    high: float
    mean: float
    evaluations: int


def race(plan: RacePlan, deltas_of: Callable[[int, int], float], candidates: int) -> RaceOutcome:
    """Run one race with the real rules: each round asks ``deltas_of(candidate, round)`` (paired ΔFID, the
    candidate's debiased FID minus the baseline's) for the candidates still racing only, so an evaluation is
    made only when the race needs it."""
    state = RaceState.start(range(1, candidates + 1))
    decisions: list[Decision] = []
    evaluations = 0
    for k in range(plan.max_rounds):
        state = state.add_round({c: deltas_of(c, k) for c in state.racing})
        evaluations += len(state.racing) + 1
        decision = decide(plan, state)
        decisions.append(decision)
        if decision.done:
            break
        state = state.after(decision)
    last = decisions[-1]
    iv = last.interval
    return RaceOutcome(decisions=tuple(decisions), win=last.win, winner=last.winner if last.win else None,
                       low=iv.low if (last.win and iv) else math.nan, high=iv.high if (last.win and iv) else math.nan,
                       mean=iv.mean if (last.win and iv) else math.nan, evaluations=evaluations)


def space_studies(setup: CalibrationSetup, ev: Evaluations, studies: int, *, space: str, first_block: int,
                  stream: Callable[[int, bool], Stream], truth_of: dict[int, float],
                  done: Callable[[], None] = lambda: None) -> tuple[RuleResult, RuleResult]:
    """``studies`` studies of one space, each rule judged on each: candidates 1..m (the keys of ``truth_of``, their
    true ΔFID) raced against the baseline on study i's own block of seed sets from ``first_block``, and the plain
    loop's "best trial beats the baseline" on round 0. ``stream(c, plain)`` is what candidate c samples for the
    race, or for the plain loop. A claim is false when its candidate's truth is not below 0, covered when the
    claimed interval holds that truth."""
    m = len(truth_of)
    plan = setup.plan(m)
    base = Stream()
    wins = false = covered = race_evals = plain_wins = plain_false = 0
    errors: list[float] = []
    rounds: list[int] = []
    halves: list[float] = []
    plain_errors: list[float] = []
    for i in range(studies):
        first = first_block + i * setup.max_rounds

        def delta(c: int, k: int, first: int = first) -> float:
            return ev.debiased(stream(c, False), first + k) - ev.debiased(base, first + k)

        outcome = race(plan, delta, m)
        race_evals += outcome.evaluations
        if outcome.win:
            t = truth_of[outcome.winner]
            wins += 1
            false += t >= 0
            covered += outcome.low <= t <= outcome.high
            errors.append(outcome.mean - t)
            rounds.append(outcome.decisions[-1].round)
            halves.append((outcome.high - outcome.low) / 2)
        fids = {c: ev.plain(stream(c, True), first) for c in range(1, m + 1)}
        best = min(fids, key=fids.__getitem__)
        claimed = fids[best] - ev.plain(base, first)
        if claimed < 0:
            plain_wins += 1
            plain_false += truth_of[best] >= 0
            plain_errors.append(claimed - truth_of[best])
        done()
    skipsearch = RuleResult(rule="skipsearch", space=space, studies=studies, claims=wins, false_claims=false,
                            covered=covered, errors=tuple(errors), claim_rounds=tuple(rounds),
                            half_widths=tuple(halves), evaluations=race_evals / studies)
    plain = RuleResult(rule="plain", space=space, studies=studies, claims=plain_wins, false_claims=plain_false,
                       covered=None, errors=tuple(plain_errors), evaluations=float(m + 1))
    return skipsearch, plain


def null_studies(setup: CalibrationSetup, ev: Evaluations, studies: int,
                 done: Callable[[], None] = lambda: None) -> tuple[RuleResult, RuleResult]:
    """``studies`` null studies: ``null_candidates`` shifted-stream candidates (truth 0) against the baseline, so
    any claim is false. The plain loop reads the race's own round-0 evaluations (plain FID)."""
    return space_studies(setup, ev, studies, space="null", first_block=0,
                         stream=lambda c, plain: Stream(shift=c),
                         truth_of=dict.fromkeys(range(1, setup.null_candidates + 1), 0.0), done=done)


def measure_truth(setup: CalibrationSetup, ev: Evaluations) -> Truth:
    """The effect's true ΔFID: paired debiased ΔFID on ``truth_sets`` fresh seed sets no study reads."""
    sets = range(TRUTH_BLOCK, TRUTH_BLOCK + setup.truth_sets)
    d = [ev.debiased(Stream(effect=True), j) - ev.debiased(Stream(), j) for j in sets]
    return Truth(mean=statistics.fmean(d), se=statistics.stdev(d) / math.sqrt(len(d)), sets=len(d))


def effect_studies(setup: CalibrationSetup, ev: Evaluations, studies: int, truth: Truth,
                   done: Callable[[], None] = lambda: None) -> tuple[RuleResult, RuleResult]:
    """``studies`` races of the effect candidate (trial 1, paired with the baseline) and ``effect_nulls``
    null candidates (trials 2..) against the baseline; coverage against ``truth`` (0 for a null). The plain
    loop scores the effect candidate on its own seeds and the nulls on theirs, and claims its best's FID minus
    the baseline's."""

    def stream(c: int, plain: bool) -> Stream:
        if c == 1:
            return Stream(effect=True, shift=PLAIN_EFFECT_STREAM if plain else 0)
        return Stream(shift=c - 1)

    truth_of = {c: (truth.mean if c == 1 else 0.0) for c in range(1, setup.effect_nulls + 2)}
    return space_studies(setup, ev, studies, space="effect", first_block=EFFECT_BLOCK, stream=stream,
                         truth_of=truth_of, done=done)


def calibrate(null: int, effect: int, setup: CalibrationSetup | None = None,
              measure: Measure | None = None, say: Callable[[str], None] = lambda line: None,
              progress: bool = False) -> Calibration:
    """``null`` null studies and ``effect`` known-effect studies, each rule judged on both (see the module);
    ``progress``: a bar (or, in a log, a line every 30 s) counting the studies of each space, which take minutes."""
    setup = setup or CalibrationSetup()
    if null < 1 or effect < 1:
        raise ValueError(f"need at least one study of each space, not {null} null and {effect} effect")
    start = time.perf_counter()
    ev = Evaluations(setup, measure)
    say(f"calibration: {null} null studies ({setup.null_candidates} shifted-stream candidates), "
        f"{effect} known-effect studies, N={setup.n}, Heun {setup.steps} steps, race of up to {setup.max_rounds} "
        f"seed sets judged every {setup.every} ({setup.procedure})")
    with Progress(null, "calibration, null space", "studies", enabled=progress) as bar:
        null_rules = null_studies(setup, ev, null, done=bar.update)
    say(f"  null done: {len(ev.cache)} evaluations, {time.perf_counter() - start:.0f} s")
    truth = measure_truth(setup, ev)
    say(f"  truth of the effect: ΔFID {truth.mean:+.4f} ± {truth.se:.4f} (s.e., {truth.sets} fresh seed sets)")
    with Progress(effect, "calibration, known effect", "studies", enabled=progress) as bar:
        effect_rules = effect_studies(setup, ev, effect, truth, done=bar.update)
    wall = time.perf_counter() - start
    say(f"  effect done: {len(ev.cache)} evaluations, {wall:.0f} s")
    return Calibration(setup=setup, truth=truth, results=(*null_rules, *effect_rules), evaluations=len(ev.cache),
                       wall_s=wall)


def bench_calibration(studies: int, setup: CalibrationSetup | None = None,
                      out: Callable[[str], None] | None = None) -> list[Record]:
    """``skipsearch bench --calibration``: ``studies`` null studies and half as many known-effect studies (the
    effect's races end early, and its coverage needs fewer), the table, the records."""
    import torch

    # one thread: the network is small, and on a shared CPU a second thread mostly waits for the other
    # processes (measured: a 64-sample evaluation took 0.6 s on one thread, 4-11 s on two under load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    say = out or (lambda line: print(line, flush=True))
    try:
        cal = calibrate(studies, max(1, studies // 2), setup, say=say, progress=True)
    finally:
        torch.set_num_threads(threads)
    from skipsearch.bench.calibration_table import records, table

    say(table(cal))
    return records(cal)
