"""Held-out confirmation: the baseline and the top-k re-evaluated at a larger N on unseen seed sets.

What one held-out evaluation computes is the method's (``Method.heldout``: Diff-Tuning retrains with a new
training seed too). The winner is the confirmed search trial with the lowest mean held-out FID
(``verdict.winner``), and whether it beats the baseline is ``verdict.verdict``'s 95% paired interval: the
rules that the run's tables, ``best``, ``export`` and the report all apply.
"""

from __future__ import annotations

import time

import pandas as pd

from skipsearch.diffusion.trajectories import clear_all
from skipsearch.evaluate import TRIAL_ERRORS
from skipsearch.methods import Coefficients, parse_coefficients
from skipsearch.progress import Progress
from skipsearch.search.context import StudyContext
from skipsearch.search.annotations import annotate_confirmation
from skipsearch.search.coordination import confirm_item, study_lock
from skipsearch.search.integrity import check_scores
from skipsearch.search.driver import POLL_S
from skipsearch.search.verdict import paired_interval, winner
from skipsearch.storage import Store
from skipsearch.storage.records import ConfirmationRow, TrialRow


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed trials that no other completed trial beats on both target and source FID."""
    done = frame[(frame.state == "COMPLETE") & frame.source_fid.notna()]
    keep = [not ((done.fid <= r.fid) & (done.source_fid <= r.source_fid) &
                 ((done.fid < r.fid) | (done.source_fid < r.source_fid))).any() for r in done.itertuples()]
    return done[keep].sort_values("fid")


def candidates(ctx: StudyContext) -> list[int]:
    """The baseline and the top-k completed search trials by search FID (on the Pareto front when the study
    has two objectives)."""
    frame = ctx.store.trials_frame(ctx.spec.name)
    done = frame[frame.state == "COMPLETE"]
    base = done[done.role == "baseline"].trial_number.tolist()
    pool = pareto_front(done) if ctx.multi_objective else done
    top = pool[pool.role == "search"].sort_values("fid").head(ctx.spec.confirm.top_k).trial_number.tolist()
    return base[:1] + top


def confirm(ctx: StudyContext, progress: bool = True) -> pd.DataFrame:
    """Re-evaluate the candidates at the larger N on held-out seed sets. Already stored evaluations are
    reused, and several drivers share the work: each evaluation is claimed by one driver, the others wait
    for it (or take it over when its driver is gone), so none is computed twice. ``progress`` counts the
    held-out evaluations, with an ETA (those stored before this call are not in its rate)."""
    c, name = ctx.spec.confirm, ctx.spec.name
    # seed set by seed set: the candidates of one set share its baseline states (shared trajectories), which
    # are dropped when the next set starts, so each set has the whole cache
    pending = [(num, j) for j in range(c.seed_sets) for num in candidates(ctx)]
    total = len(pending)
    pending = _unstored(ctx, pending)
    with Progress(total, "held-out confirmation", "evaluations", enabled=progress,
                  initial=total - len(pending)) as bar:
        while pending:
            done_here, seed_set = [], None
            for p in pending:
                if p[1] != seed_set:
                    clear_all()
                    seed_set = p[1]
                if _confirm_one(ctx, *p):
                    done_here.append(p)
                    bar.update()
            pending = [p for p in pending if p not in done_here]
            if pending and not done_here:
                time.sleep(POLL_S)  # other drivers hold the rest: wait for their rows
            left = _unstored(ctx, pending)
            bar.update(len(pending) - len(left))  # evaluations other drivers finished
            pending = left
    table = heldout_summary(ctx.store, name, c.n)
    best = winner(table)
    if best is not None:
        ctx.store.set_winner(name, best)
    with study_lock(ctx.driver):
        annotate_confirmation(ctx, table)
    return table


def _unstored(ctx: StudyContext, pending: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (candidate, seed set) pairs with no stored held-out evaluation at ``confirm.n`` (yet)."""
    if not pending:
        return []
    have = ctx.store.confirmations_frame(ctx.spec.name)
    stored = {(int(r.trial_number), int(r.seed_set)) for r in have[have.n == ctx.spec.confirm.n].itertuples()}
    return [p for p in pending if p not in stored]


def _confirm_one(ctx: StudyContext, num: int, seed_set: int) -> bool:
    """Evaluate one (candidate, seed set) if this driver can claim it; True when it did."""
    c, name = ctx.spec.confirm, ctx.spec.name
    item = confirm_item(num, seed_set, c.n)
    if not ctx.store.try_claim(name, item, ctx.driver.id, num):
        holder = ctx.store.holder(name, item)
        if holder is not None and not ctx.driver.alive(holder):
            ctx.store.release(name, item, holder)  # its driver is gone: the next round takes it over
        return False
    try:
        if ctx.store.has_confirmation(name, num, seed_set, c.n):  # another driver finished it and let go
            return True
        try:
            out = ctx.method.heldout(ctx.spec, coefficients_of(ctx.store.trial(name, num)), seed_set)
        except TRIAL_ERRORS as err:  # the candidate fails on these seeds: say so, keep the rest of the table
            ctx.echo(f"held-out  trial {num:3d}  seed set {seed_set}  FAILED: {type(err).__name__}: {err}")
            return True
        s, source = out.score, out.source
        check_scores(ctx.spec, ctx.hashes, s, source, f"held-out evaluation of trial {num} (seed set {seed_set})")
        row = ConfirmationRow(study_name=name, trial_number=num, seed_set=seed_set, seed_start=s.seed_start, n=c.n,
                              fid=s.fid, kid=s.kid, kid_std=s.kid_std, extractor=s.extractor, ref_hash=s.ref_hash,
                              wall_s=out.wall_s, source_fid=source.fid if source else None,
                              source_kid=source.kid if source else None, train_seed=out.train_seed)
        ctx.store.record_confirmation(row, claim=(item, ctx.driver.id))
        ctx.echo(f"held-out  trial {num:3d}  seed set {seed_set}  N={c.n:<6d} FID {s.fid:8.4f}  {out.wall_s:5.1f}s")
    finally:
        ctx.store.release(name, item, ctx.driver.id)
    return True


def coefficients_of(row: TrialRow) -> Coefficients:
    """A stored trial's coefficients, parsed by the method that owns their family."""
    return parse_coefficients(row.coefficients_json)


def heldout_summary(store: Store, study: str, n: int | None = None) -> pd.DataFrame:
    """One row per confirmed trial: mean held-out FID, and dFID against the baseline paired by seed set."""
    conf, trials = store.confirmations_frame(study), store.trials_frame(study)
    if n is not None:
        conf = conf[conf.n == n]
    if conf.empty or trials.empty:
        return pd.DataFrame()
    roles = trials.set_index("trial_number").role
    base_nums = [t for t in conf.trial_number.unique() if roles.get(t) == "baseline"]
    if not base_nums:
        return pd.DataFrame()
    base = conf[conf.trial_number == base_nums[0]].set_index("seed_set").fid
    base_source = conf[conf.trial_number == base_nums[0]].set_index("seed_set").source_fid
    rows = []
    for num, group in conf.groupby("trial_number"):
        g = group.set_index("seed_set")
        delta = (g.fid - base.reindex(g.index)).dropna()
        ci = paired_interval(delta.tolist())
        search = trials[trials.trial_number == num].iloc[0]
        source = (g.source_fid - base_source.reindex(g.index)).dropna()
        rows.append(dict(trial_number=int(num), role=roles.get(num), search_fid=search.fid, search_kid=search.kid,
                         search_source_fid=search.source_fid, heldout_source_fid=g.source_fid.mean(),
                         heldout_source_fid_std=g.source_fid.std(ddof=1) if len(g) > 1 else 0.0,
                         delta_source_fid=source.mean() if len(source) else None,
                         heldout_fid=g.fid.mean(), heldout_fid_std=g.fid.std(ddof=1) if len(g) > 1 else 0.0,
                         heldout_kid=g.kid.mean(), delta_fid=delta.mean(),
                         delta_fid_std=delta.std(ddof=1) if len(delta) > 1 else 0.0,
                         delta_fid_low=ci.low, delta_fid_high=ci.high, lower_on=int((delta < 0).sum()),
                         seed_sets=len(g),
                         n=int(g.n.iloc[0]), coefficients=search.coefficients_json))
    return pd.DataFrame(rows).sort_values(["role", "heldout_fid"]).reset_index(drop=True)
