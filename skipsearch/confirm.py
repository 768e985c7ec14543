"""Held-out confirmation: the baseline and the top-k re-evaluated at a larger N on unseen seed sets."""

from __future__ import annotations

import sys

import pandas as pd
from tqdm.auto import tqdm

from skipsearch.evaluate import evaluate
from skipsearch.skip import _Schedule, parse_coefficients
from skipsearch.storage import Store
from skipsearch.study import StudyContext


def candidates(ctx: StudyContext) -> list[int]:
    """The baseline and the top-k completed search trials by search FID."""
    frame = ctx.store.trials_frame(ctx.spec.name)
    done = frame[frame.state == "COMPLETE"]
    base = done[done.role == "baseline"].trial_number.tolist()
    top = done[done.role == "search"].sort_values("fid").head(ctx.spec.confirm.top_k).trial_number.tolist()
    return base[:1] + top


def confirm(ctx: StudyContext) -> pd.DataFrame:
    """Re-evaluate the candidates at the larger N on held-out seed sets; already stored runs are reused."""
    c = ctx.spec.confirm
    have = ctx.store.confirmations_frame(ctx.spec.name)
    have = have[have.n == c.n]
    todo = [(num, j) for num in candidates(ctx) for j in range(c.seed_sets)
            if have[(have.trial_number == num) & (have.seed_set == j)].empty]
    for num, j in tqdm(todo, desc="held-out confirmation", unit="eval", file=sys.stderr, disable=None):
        row = ctx.store.trial(ctx.spec.name, num)
        coeffs = coefficients_of(row)
        task = ctx.task(c.n, c.seed + j * c.n)
        result = evaluate(task, coeffs)
        ctx.store.record_confirmation(study_name=ctx.spec.name, trial_number=num, seed_set=j,
                                      seed_start=task.seed_start, n=c.n, fid=result.fid, kid=result.kid,
                                      kid_std=result.kid_std, extractor=result.extractor, ref_hash=result.ref_hash,
                                      wall_s=result.wall_s)
    table = confirmation_table(ctx.store, ctx.spec.name, c.n)
    if not table.empty:
        winner = table[table.role != "baseline"].sort_values("heldout_fid").head(1)
        if not winner.empty:
            ctx.store.set_winner(ctx.spec.name, int(winner.trial_number.iloc[0]))
    return table


def coefficients_of(row: dict) -> _Schedule:
    return parse_coefficients(row["coefficients_json"])


def confirmation_table(store: Store, study: str, n: int | None = None) -> pd.DataFrame:
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
    rows = []
    for num, group in conf.groupby("trial_number"):
        g = group.set_index("seed_set")
        delta = (g.fid - base.reindex(g.index)).dropna()
        search = trials[trials.trial_number == num].iloc[0]
        rows.append(dict(trial_number=int(num), role=roles.get(num), search_fid=search.fid, search_kid=search.kid,
                         heldout_fid=g.fid.mean(), heldout_fid_std=g.fid.std(ddof=1) if len(g) > 1 else 0.0,
                         heldout_kid=g.kid.mean(), delta_fid=delta.mean(),
                         delta_fid_std=delta.std(ddof=1) if len(delta) > 1 else 0.0, lower_on=int((delta < 0).sum()),
                         seed_sets=len(g),
                         n=int(g.n.iloc[0]), coefficients=search.coefficients_json))
    return pd.DataFrame(rows).sort_values(["role", "heldout_fid"]).reset_index(drop=True)
