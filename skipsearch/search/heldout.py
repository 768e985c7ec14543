"""Reading a held-out confirmation: the summary per confirmed trial, the Pareto front, a trial's coefficients.

What ``best``, ``export``, the frames and the report read of a confirmation, apart from ``confirm`` (which
evaluates it and so needs the evaluator, the samplers and Optuna): a reader imports only pandas and the store.
"""

from __future__ import annotations

import pandas as pd

from skipsearch.methods import Coefficients, parse_coefficients
from skipsearch.search.measured import column, reported
from skipsearch.search.verdict import paired_interval
from skipsearch.storage import Store
from skipsearch.storage.records import TrialRow


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed trials that no other completed trial beats on both target and source FID."""
    done = frame[(frame.state == "COMPLETE") & frame.source_fid.notna()]
    keep = [not ((done.fid <= r.fid) & (done.source_fid <= r.source_fid) &
                 ((done.fid < r.fid) | (done.source_fid < r.source_fid))).any() for r in done.itertuples()]
    return done[keep].sort_values("fid")


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


def heldout_reported(store: Store, study: str, n: int, objective: str) -> pd.DataFrame:
    """The report's numbers per confirmed trial at ``n``: each one's mean over the held-out seed sets
    (``heldout_METRIC@EXTRACTOR``) and, for FID in another extractor, the paired dFID against the baseline and its
    95% interval over the seed sets (``delta_fid@EXTRACTOR``, ``delta_fid_low@...``, ``delta_fid_high@...``), as
    the objective's. Empty (only ``trial_number``) when the study reports nothing."""
    wide = reported(store, study, "confirmation", objective)
    wide = wide[wide.n == n] if not wide.empty else wide
    values = [c for c in wide.columns if c not in ("trial_number", "seed_set", "n")]
    if wide.empty or not values:
        return pd.DataFrame(columns=["trial_number"])
    trials = store.trials_frame(study)
    roles = trials.set_index("trial_number").role
    base_nums = [t for t in wide.trial_number.unique() if roles.get(t) == "baseline"]
    base = wide[wide.trial_number == base_nums[0]].set_index("seed_set") if base_nums else None
    fids = [c for c in values if c.startswith(column("fid", ""))]
    rows = []
    for num, group in wide.groupby("trial_number"):
        g = group.set_index("seed_set")
        row: dict = {"trial_number": int(num)} | {f"heldout_{c}": g[c].mean() for c in values}
        for c in fids:
            ci = paired_interval((g[c] - base[c].reindex(g.index)).dropna().tolist()) if base is not None else None
            extractor = c.removeprefix(column("fid", ""))
            row |= {f"delta_fid@{extractor}": None if ci is None else ci.mean,
                    f"delta_fid_low@{extractor}": None if ci is None else ci.low,
                    f"delta_fid_high@{extractor}": None if ci is None else ci.high}
        rows.append(row)
    return pd.DataFrame(rows).astype({c: "float64" for r in rows[:1] for c in r if c != "trial_number"})
