"""Held-out confirmation: the baseline and the top-k re-evaluated at a larger N on unseen seed sets.

What one held-out evaluation computes is the method's (``Method.heldout``: Diff-Tuning retrains with a new
training seed too). The winner is the confirmed search trial with the lowest mean held-out FID
(``verdict.winner``), and whether it beats the baseline is ``verdict.verdict``'s 95% paired interval: the
rules that the run's tables, ``best``, ``export`` and the report all apply. What they read of a stored
confirmation (``heldout_summary``, ``pareto_front``, ``coefficients_of``) is in ``heldout``, which imports no
evaluator, sampler or Optuna; it is re-exported here.
"""

from __future__ import annotations

import time

import pandas as pd

from skipsearch.diffusion.trajectories import clear_all
from skipsearch.evaluate import TRIAL_ERRORS
from skipsearch.progress import Progress
from skipsearch.search.context import StudyContext
from skipsearch.search.annotations import annotate_confirmation
from skipsearch.search.coordination import claim_item, confirm_item, study_lock
from skipsearch.search.integrity import check_scores
from skipsearch.search.racing import ENTRANTS, JUDGED, plan_of, replay, stored_entrants, stored_judged
from skipsearch.search.racing import STAGE as RACE_STAGE
from skipsearch.search import second_opinion as opinion
from skipsearch.search.recording import reported
from skipsearch.search.budget import POLL_S
from skipsearch.search.heldout import coefficients_of, heldout_summary, pareto_front
from skipsearch.search.verdict import winner
from skipsearch.storage.records import ConfirmationRow, MeasuredAt, references_of

DONE, FAILED = "done", "failed"  # what ``_confirm_one`` did with an evaluation it claimed
__all__ = ["candidates", "coefficients_of", "confirm", "heldout_summary", "pareto_front"]  # readers: ``heldout``


def candidates(ctx: StudyContext) -> list[int]:
    """The baseline and the top-k completed search trials by search FID (on the Pareto front when the study
    has two objectives)."""
    frame = ctx.store.trials_frame(ctx.spec.name)
    done = frame[frame.state == "COMPLETE"]
    base = done[done.role == "baseline"].trial_number.tolist()
    pool = pareto_front(done, ctx.method.objectives(ctx.spec)) if ctx.multi_objective else done
    top = pool[pool.role == "search"].sort_values("fid").head(ctx.spec.confirm.top_k).trial_number.tolist()
    return base[:1] + top


def confirm(ctx: StudyContext, progress: bool = True) -> pd.DataFrame:
    """Re-evaluate the candidates at the larger N on held-out seed sets: all of them on every seed set, or, in a
    raced confirmation (``confirm.race``), round by round while the race lasts. Already stored evaluations are
    reused, and several drivers share the work: each evaluation is claimed by one driver, the others wait
    for it (or take it over when its driver is gone), so none is computed twice. ``progress`` counts the
    held-out evaluations, with an ETA (those stored before this call are not in its rate)."""
    c, name = ctx.spec.confirm, ctx.spec.name
    if c.race:
        _race(ctx, progress)
    else:
        # seed set by seed set: the candidates of one set share its baseline states (shared trajectories), which
        # are dropped when the next set starts, so each set has the whole cache
        pending = [(num, j) for j in range(c.seed_sets) for num in candidates(ctx)]
        total = len(pending)
        pending = _unstored(ctx, pending)
        with Progress(total, "held-out confirmation", "evaluations", enabled=progress,
                      initial=total - len(pending)) as bar:
            _evaluate(ctx, pending, bar)
    table = heldout_summary(ctx.store, name, c.n)
    best = winner(table)
    if best is not None:
        ctx.store.set_winner(name, best)
        _second_opinion(ctx, table, best, progress)
        table = heldout_summary(ctx.store, name, c.n)  # with the opinion, or why there is none
    with study_lock(ctx.driver):
        annotate_confirmation(ctx, table)
    return table


def _race(ctx: StudyContext, progress: bool) -> None:
    """The raced confirmation: one seed set at a time for the baseline and the candidates still in, the race
    replayed from the stored rows after each (``racing.replay``), each look's decision said, until it ends."""
    c = ctx.spec.confirm
    entered = _entrants(ctx)
    if len(entered) < 2:
        return  # no baseline, or no search trial to race against it
    base, top = entered[0], entered[1:]
    plan, failed = plan_of(c, len(top)), set()
    said, tried = 0, -1
    ctx.echo(f"racing {len(top)} candidate(s) against the baseline: up to {c.seed_sets} held-out seed sets of "
             f"N={c.n}, judged on the debiased paired dFID every {plan.every} seed set(s) ({plan.says})")
    with Progress((1 + len(top)) * c.seed_sets, "held-out race", "evaluations (at most)", enabled=progress) as bar:
        while True:
            race = replay(plan, base, top, stored_judged(ctx.store, ctx.spec), failed)
            for decision in race.decisions[said:]:
                ctx.echo(f"race  {decision.text}")
            said = len(race.decisions)
            if race.done:
                return
            if race.rounds == tried:  # its rows are all there, yet the round is not: they lack what is judged
                ctx.echo(f"race  the held-out rows of seed set {tried} at N={c.n} have no {JUDGED} (stored before "
                         f"confirm.race was set): the race stops; set confirm.seed to new seeds to race")
                return
            tried = race.rounds
            pending = [(num, race.rounds) for num in (base, *race.racing)]
            unstored = _unstored(ctx, pending)
            bar.update(len(pending) - len(unstored))  # stored before (a resumed or shared race)
            failed |= _evaluate(ctx, unstored, bar)
            if (base, race.rounds) in failed:
                ctx.echo(f"race  the baseline's held-out evaluation failed on seed set {race.rounds}: the race "
                         f"stops there")
                return


def _second_opinion(ctx: StudyContext, table: pd.DataFrame, best: int, progress: bool) -> None:
    """The winner and the baseline in the second feature space (``second_opinion``), on its seed sets. Which
    space is worked out once per study, under the study lock, and said."""
    (n, sets), name = opinion.plan(ctx.spec), ctx.spec.name
    base = table[table.role == "baseline"].trial_number
    if base.empty or int(base.iloc[0]) == best:
        return
    base = int(base.iloc[0])
    with study_lock(ctx.driver):
        label, why = opinion.settle_space(ctx, base)
    if label is None:
        ctx.echo(f"opinion   no second opinion: {why}")
        return
    def unstored(_ctx: StudyContext, ps: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [p for p in ps if not ctx.store.has_measurements(name, p[0], opinion.where(ctx.spec, p[1]))]

    pending = [(num, j) for j in range(sets) for num in (base, best)]
    left = unstored(ctx, pending)
    if left:
        ctx.echo(f"opinion   trial {best} and the baseline in a second feature space, {label}: the first {n} "
                 f"samples of held-out seed sets 0-{sets - 1}, judged on the paired debiased dFID")
    with Progress(len(pending), "second opinion", "evaluations", enabled=progress,
                  initial=len(pending) - len(left)) as bar:
        _evaluate(ctx, left, bar, one=lambda num, j: opinion.evaluate_one(ctx, label, num, j), unstored=unstored)


def _entrants(ctx: StudyContext) -> list[int]:
    """The baseline and the race's candidates: those stored when it started, else the top-k now, stored (under
    the study lock, so every driver races the same ones, and a reader replays them)."""
    c, name = ctx.spec.confirm, ctx.spec.name
    with study_lock(ctx.driver):
        fixed = stored_entrants(ctx.store.extras_frame(name), c.n)
        if fixed is not None:
            return [fixed[0], *fixed[1]]
        entered = candidates(ctx)
        if len(entered) >= 2:
            ctx.store.record_measurements(name, entered[0], MeasuredAt(stage=RACE_STAGE, n=c.n), (), extras={
                ENTRANTS: {"baseline": entered[0], "candidates": entered[1:]}})
        return entered


def _evaluate(ctx: StudyContext, pending: list[tuple[int, int]], bar: Progress, one=None,
              unstored=None) -> set[tuple[int, int]]:
    """Evaluate every (candidate, seed set) of ``pending`` here or wait for the driver that claimed it; the ones
    that failed here (a candidate's own failure on those seeds: no row is written). ``one`` evaluates one pair
    (by default a held-out evaluation, ``_confirm_one``), ``unstored`` says which are still missing."""
    one = one or (lambda num, j: _confirm_one(ctx, num, j))
    unstored = unstored or _unstored
    failed: set[tuple[int, int]] = set()
    while pending:
        done_here, seed_set = [], None
        for p in pending:
            if p[1] != seed_set:
                clear_all()
                seed_set = p[1]
            outcome = one(*p)
            if outcome is not None:
                done_here.append(p)
                bar.update()
                if outcome == FAILED:
                    failed.add(p)
        pending = [p for p in pending if p not in done_here]
        if pending and not done_here:
            time.sleep(POLL_S)  # other drivers hold the rest: wait for their rows
        left = unstored(ctx, pending)
        bar.update(len(pending) - len(left))  # evaluations other drivers finished
        pending = left
    return failed


def _unstored(ctx: StudyContext, pending: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (candidate, seed set) pairs with no stored held-out evaluation at ``confirm.n`` (yet)."""
    if not pending:
        return []
    have = ctx.store.confirmations_frame(ctx.spec.name)
    stored = {(int(r.trial_number), int(r.seed_set)) for r in have[have.n == ctx.spec.confirm.n].itertuples()}
    return [p for p in pending if p not in stored]


def _confirm_one(ctx: StudyContext, num: int, seed_set: int) -> str | None:
    """Evaluate one (candidate, seed set) if this driver can claim it: ``DONE`` (or ``FAILED``: the candidate's
    own failure, said and not stored) when it did, None when another driver holds it."""
    c, name = ctx.spec.confirm, ctx.spec.name
    item = confirm_item(num, seed_set, c.n)
    if not claim_item(ctx.driver, item, num):
        return None
    try:
        if ctx.store.has_confirmation(name, num, seed_set, c.n):  # another driver finished it and let go
            return DONE
        try:
            out = ctx.method.heldout(ctx.spec, coefficients_of(ctx.store.trial(name, num)), seed_set)
        except TRIAL_ERRORS as err:  # the candidate fails on these seeds: say so, keep the rest of the table
            ctx.echo(f"held-out  trial {num:3d}  seed set {seed_set}  FAILED: {type(err).__name__}: {err}")
            return FAILED
        s = out.score
        check_scores(ctx.spec, ctx.hashes, s, out.references,
                     f"held-out evaluation of trial {num} (seed set {seed_set})")
        row = ConfirmationRow(study_name=name, trial_number=num, seed_set=seed_set, seed_start=s.seed_start, n=c.n,
                              fid=s.fid, kid=s.kid, kid_std=s.kid_std, extractor=s.extractor, ref_hash=s.ref_hash,
                              wall_s=out.wall_s, references=references_of(out.references), extras=dict(out.extras))
        ctx.store.record_confirmation(row, claim=(item, ctx.driver.id), measurements=reported(s, out.references))
        ctx.echo(f"held-out  trial {num:3d}  seed set {seed_set}  N={c.n:<6d} FID {s.fid:8.4f}  {out.wall_s:5.1f}s")
    finally:
        ctx.store.release(name, item, ctx.driver.id)
    return DONE
