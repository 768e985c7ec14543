"""``skipsearch bench --versus-plain``: what a confirmed winner costs, against the loop a user would otherwise write.

Both sides search the same space of the same method on the same model, sampler and feature extractor, and
both winners are judged on the same held-out seed sets, which neither side saw, so the comparison is about the
search strategy alone:

- **skipsearch**: the spec's study (its baseline, common random numbers, a ladder of sample counts with
  successive halving, held-out confirmation of the top-k), run through the public ``skipsearch.run`` into a
  fresh temporary SQLite database, with ``search.seed`` = the repeat. A spec without ``metric.rungs`` gets
  ``n/4, n/2`` below ``n`` (the rungs no smaller than ``kid_subset_size``), and the output says so. Its
  winner is the confirmed winner (``skipsearch best``'s choice), or the baseline when none was confirmed or
  the confirmed winner's mean held-out ΔFID is above zero (the confirmation measured the baseline too, and
  says the candidate is worse).
- **plain**: an in-memory ``optuna.create_study(sampler=TPESampler(seed=repeat))`` over the method's own
  ``suggest`` (the identical space); each trial samples N = ``confirm.n`` images from seeds no other trial,
  no held-out set and no search trial uses, and scores them with torch-fidelity's ``fid_features_to_statistics``
  and ``fid_statistics_to_metric`` on the same extractor's features; no rungs, no baseline; the lowest FID
  wins.

**Network evaluations** are samples x NFE. skipsearch spends, for each search trial, the largest N it reached
(its rungs reuse the images of the rung below, so a trial stopped at N cost N samples; a failed trial is
counted at nothing) plus every held-out evaluation of its confirmation (the baseline's too, and the second
opinion's: the winner and the baseline sampled again, ``search.second_opinion``). The plain side
gets as many whole trials of ``confirm.n`` samples as fit in skipsearch's total, so the two totals differ by
less than one plain trial. The same forward calls are also counted at the network itself, as a check on
this arithmetic.

**Evaluations to the winner**: the plain side's, the cumulative evaluations up to and including the trial
that became its final best. skipsearch's, the cumulative search evaluations up to the end of the search
trial that became the confirmed winner, plus all of the confirmation (the winner is only known after it); when
nothing was confirmed (the baseline stays), all of the study's evaluations.

**Held-out ΔFID** = FID(winner) - FID(baseline) on each judging seed set, mean over the sets, both FIDs from
skipsearch's held-out evaluation (``Method.heldout``). The judging sets are as many sets of ``confirm.n``
seeds as the spec's confirmation has, above every seed the study and the spec use (the plain side's seeds lie
above them). They are not the confirmation's own sets: the confirmation chose skipsearch's winner as the best
of its top-k on those, so its value there is flattered by that selection (it is still printed, as
``confirmation dFID``). Judging is the benchmark's cost, counted on neither side. The target: skipsearch's
held-out ΔFID at most the plain side's, with at most a third of its evaluations to the winner (ratio plain /
skipsearch >= 3). With equal budgets the ratio cannot exceed the plain side's total over skipsearch's
confirmation (its winner is known only after it), so the table prints that ceiling too: a spec whose
confirmation is more than a third of its budget cannot meet the target.

**The plain side's evaluations to match skipsearch** answer the target's question directly: how many evaluations
does the plain loop need before the winner it would report is as good as skipsearch's on the held-out sets?
With equal budgets the ratio above cannot reach 3 whenever the confirmation is more than a third of the budget,
so the plain loop runs on, to ``plain_budget`` times skipsearch's total (default 3, ``--plain-budget``), and
each trial that becomes its running best is judged on the held-out seed sets (the benchmark's cost, not the
loop's) until one is at least as good as skipsearch's winner (held-out ΔFID at most skipsearch's). The
evaluations through that trial, over skipsearch's evaluations to its winner, is the ratio to match (target >= 3).
When no running best gets there, the ratio is only known to exceed the run's total over skipsearch's
evaluations to its winner. When skipsearch keeps the baseline there is nothing to match, and the plain loop stops
at the equal budget. The equal-budget side is the same run cut at the budget (the first trials of a TPE
run do not depend on how many follow; see ``bench.plain_loop``).

**The second space.** skipsearch keeps the baseline when its second opinion disagrees with its winner, so judged
in the objective's space alone it would lose to a plain winner whose gain lives in that space only. Where the
spec's second opinion has a space, both equal-budget winners are also scored there as a study's opinion scores
its own (``versus_judge.second_space_fids``: the opinion's N on its first seed sets of the judging sets).

The plain loop itself is ``bench.plain_loop``; judging the winners and the match, ``bench.versus_judge``; the
header, lines, table and records, ``bench.versus_table``.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from skipsearch import api
from skipsearch.bench.network_count import NetworkCounter, sampling_copies
from skipsearch.bench.plain_loop import plain_search
from skipsearch.bench.measurements import Record
from skipsearch.bench.versus_judge import (Judge, heldout_ranges, judging_spec,
                                           match_skipsearch, mean_delta)
from skipsearch.bench.versus_results import Side, VersusRepeat
from skipsearch.bench.versus_table import header, match_line, records, second_line, side_line, table
from skipsearch.errors import UserError
from skipsearch.evaluate import Evaluator, evaluator_for, resolve_device
from skipsearch.fields import SEED_MAX
from skipsearch.methods import Coefficients, method_for, parse_coefficients
from skipsearch.methods.sampled import eval_task
from skipsearch.spec import MIN_FID_N, TRIALS_MAX, Spec
from skipsearch.spec_errors import format_validation_error
from skipsearch.specfile import load_spec

PLAIN_BUDGET_MAX = 10.0  # the plain loop's run, in multiples of skipsearch's evaluations
REPEATS_MAX = 100  # repeats a spec's seeds are divided among: --first-repeat + --repeats at most this


def say(line: str) -> None:
    """One progress line, flushed: a run redirected to a file shows each side as it ends."""
    print(line, flush=True)


# --- the spec of each side -----------------------------------------------------------------------------------


def check_comparable(spec: Spec, flag: str = "--versus-plain") -> None:
    """Only a training-free, single-objective method fits the plain loop (sample, score, keep the lowest), and the
    pruners' replay (every trial sampled once at n, its FID read at each rung)."""
    method = method_for(spec.kind)
    if method.fidelity(spec).unit != "samples":
        raise UserError(f"{flag} compares training-free searches (trials that only sample); {spec.kind} "
                        f"trials train, so a sampling loop would not search the same thing")
    if len(method.objectives(spec)) > 1:
        raise UserError(f"{flag} needs a single-objective study (it keeps the lowest FID)")


def default_rungs(spec: Spec) -> tuple[int, ...]:
    """n/4 and n/2 below n (one factor of 2, as successive halving wants), keeping only whole rungs no smaller
    than ``kid_subset_size`` (KID draws subsets of that size at every rung) or ``MIN_FID_N`` (a FID's floor)."""
    m = spec.metric
    if m.n % 2:
        return ()
    ladder = [m.n // 4, m.n // 2] if m.n % 4 == 0 else [m.n // 2]
    return tuple(r for r in ladder if r >= max(m.kid_subset_size, MIN_FID_N))


def study_spec(spec: Spec, repeat: int, trials: int | None, rungs: tuple[int, ...], storage: str) -> Spec:
    """The skipsearch side's spec for one repeat. The changed metric section is validated again (the ladder's
    rules), and the trial budget is checked here, so an override that does not fit is a clear message."""
    if trials is not None and not 1 <= trials <= TRIALS_MAX:
        raise UserError(f"--trials must be between 1 and {TRIALS_MAX}, got {trials}")
    try:
        metric = type(spec.metric).model_validate(spec.metric.model_dump() | {"rungs": rungs})
    except ValidationError as err:
        raise UserError(format_validation_error(f"{spec.name} with rungs {list(rungs)}", err, "metric.")) from None
    search = spec.search.model_copy(update={"seed": repeat} | ({} if trials is None else {"trials": trials}))
    return spec.model_copy(update={"name": f"{spec.name}-versus-plain-r{repeat}"[:200], "storage": storage,
                                   "search": search, "metric": metric})


# --- the skipsearch side ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StudyOutcome:
    """What the skipsearch side chose and spent; its winner is judged afterwards, with the plain side's."""

    trial: int | None  # the confirmed winner, None when the baseline stays
    coefficients: Coefficients  # the winner's (the baseline's when it stays)
    baseline: Coefficients
    confirmation_dfid: float  # the winner's held-out dFID on its own confirmation's seed sets (0 for the baseline)
    evals_to_winner: int
    total_evals: int
    confirmation_evals: int
    trials: int
    wall_s: float
    verdict: str  # the study's own verdict, as ``skipsearch best`` says it: why the baseline stays, when it does


def trial_costs(trials: pd.DataFrame, nfe: int) -> pd.Series:
    """Network evaluations of each search trial, by trial number (in the order a single driver ran them):
    the largest N it reached x NFE; a failed trial counts nothing."""
    ran = trials.sort_values("trial_number")
    reached = ran.n.where(ran.state.isin(["COMPLETE", "PRUNED"]), 0).astype("int64")
    return pd.Series((reached * nfe).to_numpy(), index=ran.trial_number.to_numpy())


def run_study(study: Spec, nfe: int) -> StudyOutcome:
    """The skipsearch side: search and confirm through the public API, then read its costs and held-out rows."""
    start = time.perf_counter()
    result = api.run(study, storage=study.storage, echo=lambda line: say(line) if line.startswith("warning") else None)
    wall = time.perf_counter() - start
    costs = trial_costs(api.trials(study.storage, study.name), nfe)
    rows = api.confirmations(study.storage, study.name, per_seed_set=True)
    rows = rows[rows.n == study.confirm.n]
    confirm_evals = len(rows) * study.confirm.n * nfe + opinion_evals(study, nfe)
    base = rows[rows.role == "baseline"]
    if base.empty:
        raise RuntimeError(f"study {study.name}: the baseline has no held-out evaluation to compare with")
    baseline = parse_coefficients(base.coefficients_json.iloc[0])
    baseline_by_set = held_out_of(rows, int(base.trial_number.iloc[0]))
    total = int(costs.sum()) + confirm_evals
    won, judged = result.winner, result.verdict  # judged from the stored confirmation: read once
    own = math.nan if won is None else mean_delta(held_out_of(rows, won), baseline_by_set)
    disagrees = judged.opinion == "disagrees"
    if won is None or own > 0 or disagrees:  # none confirmed, measured worse, or worse in the second space:
        # a user keeps the baseline
        return StudyOutcome(trial=None, coefficients=baseline, baseline=baseline, confirmation_dfid=0.0,
                            evals_to_winner=total, total_evals=total, confirmation_evals=confirm_evals,
                            trials=len(costs), wall_s=wall, verdict=judged.text)
    chosen = parse_coefficients(rows[rows.trial_number == won].coefficients_json.iloc[0])
    return StudyOutcome(trial=won, coefficients=chosen, baseline=baseline, confirmation_dfid=own,
                        evals_to_winner=int(costs[costs.index <= won].sum()) + confirm_evals, total_evals=total,
                        confirmation_evals=confirm_evals, trials=len(costs), wall_s=wall, verdict=judged.text)


def opinion_evals(study: Spec, nfe: int) -> int:
    """Network evaluations of the second opinion (``search.second_opinion``): each (trial, seed set) it sampled,
    at its N; part of the confirmation's cost."""
    from skipsearch.search.second_opinion import STAGE, plan
    from skipsearch.storage import Store

    store = Store(study.storage, create=False)
    try:
        rows = store.measurements_frame(study.name)
    finally:
        store.close()
    n = plan(study)[0]
    rows = rows[(rows.stage == STAGE) & (rows.n == n)]
    return len(rows[["trial_number", "seed_set"]].drop_duplicates()) * n * nfe


def held_out_of(rows: pd.DataFrame, trial: int) -> dict[int, float]:
    """A confirmed trial's held-out FID per seed set."""
    return {int(r.seed_set): float(r.fid) for r in rows[rows.trial_number == trial].itertuples()}


# --- one repeat, all repeats ----------------------------------------------------------------------------------


def plain_seed_block(judge: Judge, repeat: int) -> range:
    """The fresh seeds repeat ``repeat``'s plain trials may use: one of ``REPEATS_MAX`` equal blocks between the
    judging sets' top and 2^31. Fixed per repeat (not chained after the repeats before it), so a repeat run
    alone (``--first-repeat``) samples what it would in a longer run, and repeats can be split across
    sessions or machines."""
    top = heldout_ranges(judge.spec)[-1][1]
    size = (SEED_MAX + 1 - top) // REPEATS_MAX
    return range(top + repeat * size, top + (repeat + 1) * size)


def plain_trials(spec: Spec, total_evals: int, plain_budget: float, seeds: range) -> tuple[int, int]:
    """Whole plain trials within skipsearch's total (at least one), and within ``plain_budget`` times it."""
    per_trial = spec.confirm.n * spec.sampler.config().nfe
    equal = max(1, total_evals // per_trial)
    run = max(equal, math.floor(plain_budget * total_evals / per_trial))
    if run * spec.confirm.n > len(seeds):
        raise UserError(f"the plain side's {run} trials of {spec.confirm.n} fresh seeds would pass the "
                        f"{len(seeds):,} seeds each repeat has; lower confirm.n, the seeds in the spec or "
                        f"--plain-budget")
    return equal, run


def one_repeat(spec: Spec, study: Spec, ev: Evaluator, repeat: int, judge: Judge,
               plain_budget: float = 1.0) -> VersusRepeat:
    """skipsearch's study first (its total sets the budget), then the plain loop to ``plain_budget`` times that
    budget, then the winners on the judging seed sets: skipsearch's, the plain one within the equal budget, and
    the plain running bests until one matches skipsearch's."""
    nfe, n = spec.sampler.config().nfe, spec.confirm.n
    per_trial = n * nfe
    counter = NetworkCounter(*sampling_copies(spec, ev, judge.second))
    try:
        outcome = run_study(study, nfe)
        at_network_study = counter.count
        seeds = plain_seed_block(judge, repeat)
        equal, run = plain_trials(spec, outcome.total_evals, plain_budget, seeds)
        if outcome.trial is None:  # the baseline stays: no plain trial is judged for a match, so none is run for one
            run = equal
        counter.count = 0
        plain = plain_search(spec, ev, repeat, run, seeds.start)
        at_network_plain = counter.count
    finally:
        counter.close()
    base = judge.heldout(outcome.baseline, "held-out, baseline")
    mine = judge.heldout(outcome.coefficients, "held-out, skipsearch's winner")
    ours = Side(name="skipsearch", winner="baseline" if outcome.trial is None else outcome.coefficients.describe(),
                trial=outcome.trial, heldout_fid=statistics.fmean(mine.values()), delta_fid=mean_delta(mine, base),
                evals_to_winner=outcome.evals_to_winner, total_evals=outcome.total_evals, trials=outcome.trials,
                wall_s=outcome.wall_s)
    say(side_line(repeat, ours))
    if outcome.trial is None:  # the study's own words for why: none found, measured worse, or the opinion disagreed
        say(f"repeat {repeat} study's verdict: {outcome.verdict}")
    best = plain.best_within(equal)
    if best is None:
        raise UserError(f"every one of the plain side's first {equal} trials failed; see the trial errors above")

    def plain_delta(t: int) -> float:
        chosen = plain.coefficients[t]
        if chosen is None:
            raise RuntimeError(f"plain trial {t} has a FID but no coefficients")
        return judge.delta(chosen, outcome.baseline, f"held-out, plain trial {t}")

    theirs = judge.heldout(plain.coefficients[best], f"held-out, plain trial {best}")
    side = Side(name="plain", winner=plain.coefficients[best].describe(), trial=best,
                heldout_fid=statistics.fmean(theirs.values()), delta_fid=plain_delta(best),
                evals_to_winner=(best + 1) * per_trial, total_evals=equal * per_trial,
                trials=equal, wall_s=plain.wall_within(equal))
    say(side_line(repeat, side))
    match = match_skipsearch(spec, plain, None if ours.trial is None else ours.delta_fid, plain_delta)
    say(match_line(repeat, match, run, ours))
    if judge.second is not None:  # both winners in the second space, as a study's second opinion judges its own
        ours = replace(ours, second_delta_fid=judge.second_delta(outcome.coefficients, outcome.baseline,
                                                                 "second space, skipsearch's winner"))
        side = replace(side, second_delta_fid=judge.second_delta(plain.coefficients[best], outcome.baseline,
                                                                 f"second space, plain trial {best}"))
        say(second_line(repeat, judge.second, ours, side))
    return VersusRepeat(repeat=repeat, nfe=nfe, skipsearch=ours, plain=side,
                        skipsearch_confirmation_dfid=outcome.confirmation_dfid,
                        baseline_heldout_fid=statistics.fmean(base.values()), heldout_seeds=heldout_ranges(judge.spec),
                        plain_seeds=tuple((seeds.start + t * n, seeds.start + (t + 1) * n) for t in range(run)),
                        counted_at_network=(at_network_study, at_network_plain),
                        confirmation_evals=outcome.confirmation_evals, match=match, plain_run=plain,
                        second_space=judge.second)


def versus_plain(spec_path: Path | str, repeats: int = 3, trials: int | None = None,
                 plain_budget: float = 3.0, first_repeat: int = 0) -> list[VersusRepeat]:
    """Both sides for sampler seeds ``first_repeat`` .. ``first_repeat + repeats - 1`` (see the module's
    docstring). ``trials`` overrides the study's trial budget (the plain side's follows from the evaluations
    skipsearch spent); the plain loop runs to ``plain_budget`` times skipsearch's evaluations. A repeat gives the
    same figures whichever run it is part of, so ``first_repeat`` lets repeats be run apart."""
    if not 1 <= repeats <= REPEATS_MAX:
        raise UserError(f"--repeats must be between 1 and {REPEATS_MAX}, got {repeats}")
    if not 0 <= first_repeat <= REPEATS_MAX - repeats:
        raise UserError(f"--first-repeat must be between 0 and {REPEATS_MAX - repeats} (--first-repeat + --repeats "
                        f"at most {REPEATS_MAX}), got {first_repeat}")
    if not 1.0 <= plain_budget <= PLAIN_BUDGET_MAX:
        raise UserError(f"--plain-budget must be between 1 and {PLAIN_BUDGET_MAX:g}, got {plain_budget:g}")
    spec = load_spec(spec_path)
    check_comparable(spec)
    rungs = spec.metric.rungs or default_rungs(spec)
    chosen = range(first_repeat, first_repeat + repeats)
    say(header(spec, chosen, rungs, trials, plain_budget))
    ev = evaluator_for(eval_task(spec, n=spec.confirm.n, seed_start=spec.confirm.seed))
    second, why = second_space(spec)
    say(f"  second space: {second}, both winners' paired debiased dFID on the second opinion's seed sets of the "
        f"judging sets" if second else f"  second space: none ({why})")
    judge, out = Judge(judging_spec(spec), second), []
    with tempfile.TemporaryDirectory(prefix="skipsearch-versus-plain-") as tmp:
        for repeat in chosen:
            study = study_spec(spec, repeat, trials, rungs, f"sqlite:///{Path(tmp) / f'r{repeat}.db'}")
            result = one_repeat(spec, study, ev, repeat, judge, plain_budget)
            check_counts(result)
            out.append(result)
    return out


def second_space(spec: Spec) -> tuple[str | None, str]:
    """The space the spec's second opinion would take (``second_opinion.space_for``): the benchmark judges both
    winners there too, so a win that lives in one feature space only counts for neither side."""
    from skipsearch import data
    from skipsearch.resolve import resolve
    from skipsearch.search.second_opinion import space_for

    info = resolve(spec).info
    images = data.load(spec.metric.reference, resolution=info.resolution)
    return space_for(spec, info, images, resolve_device(spec.device))


def check_counts(result: VersusRepeat) -> None:
    """Say so when the forward calls counted at the network differ from the samples x NFE arithmetic."""
    counted = zip(("skipsearch", "plain"), (result.skipsearch.total_evals, result.match.run_evals),
                  result.counted_at_network)
    for name, evals, seen in counted:
        if seen != evals:
            say(f"warning: repeat {result.repeat} {name}: {seen:,} network evaluations counted at the network's "
                f"forward, {evals:,} by samples x NFE")


def bench_versus_plain(spec_path: Path | str, repeats: int = 3, trials: int | None = None,
                       plain_budget: float = 3.0, first_repeat: int = 0) -> list[Record]:
    """Run both sides ``repeats`` times from ``first_repeat``, print the table, and return the records
    (``skipsearch bench --versus-plain``)."""
    results = versus_plain(spec_path, repeats, trials, plain_budget, first_repeat)
    print("versus plain, per repeat (held-out dFID = winner - baseline on judging seed sets neither side saw):")
    print(table(results), flush=True)
    return records(results, resolve_device(load_spec(spec_path).device))
