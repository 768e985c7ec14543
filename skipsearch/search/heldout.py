"""Reading a held-out confirmation: the summary per confirmed trial, the Pareto front, a trial's coefficients.

What ``best``, ``export``, the frames and the report read of a confirmation, apart from ``confirm`` (which
evaluates it and so needs the evaluator, the samplers and Optuna): a reader imports only pandas and the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from skipsearch.methods import Coefficients, method_for, parse_coefficients
from skipsearch.search.measured import column, reported
from skipsearch.search.racing import failures_between, plan_of, replay, stored_entrants, stored_judged
from skipsearch.search.second_opinion import opinion_columns
from skipsearch.search.verdict import paired_interval
from skipsearch.search.stored_spec import read_stored
from skipsearch.storage import Store
from skipsearch.storage.records import TrialRow


def pareto_front(frame: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """Completed trials with every one of ``objectives`` (columns of ``frame``: the method's, ``objectives(spec)``)
    that no other such trial beats on all of them, by the first objective. Empty where a column is missing."""
    columns = list(objectives)
    if not set(columns) <= set(frame.columns):
        return frame.iloc[0:0]
    done = frame[(frame.state == "COMPLETE") & frame[columns].notna().all(axis=1)]
    values = done[columns].to_numpy(dtype=float)
    keep = [not ((values <= v).all(axis=1) & (values < v).any(axis=1)).any() for v in values]
    return done[keep].sort_values(columns[0], kind="stable")  # ties keep the trials' order


def coefficients_of(row: TrialRow) -> Coefficients:
    """A stored trial's coefficients, parsed by the method that owns their family."""
    return parse_coefficients(row.coefficients_json)


def study_references(store: Store, study: str) -> dict[str, str]:
    """The further references of the study's method (``Method.references``), read from its stored spec."""
    spec = read_stored(store, study)
    return {} if spec is None else method_for(spec.kind).references(spec)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column of ``frame``, NaN throughout where the frame has none (no row of the study had that number)."""
    return frame[name] if name in frame.columns else pd.Series(float("nan"), index=frame.index, dtype="float64")


def _reference_numbers(domain: str, search: pd.Series, g: pd.DataFrame, base: pd.DataFrame) -> dict:
    """A further reference's numbers in one candidate's summary row (``Method.references``): its FID in the search,
    its held-out mean and SD, and its mean paired difference against the baseline."""
    name = f"{domain}_fid"
    values = _column(g, name)
    paired = (values - _column(base, name).reindex(g.index)).dropna()
    return {f"search_{name}": search.get(name, float("nan")), f"heldout_{name}": values.mean(),
            f"heldout_{name}_std": values.std(ddof=1) if len(g) > 1 else 0.0,
            f"delta_{name}": paired.mean() if len(paired) else None}


def heldout_summary(store: Store, study: str, n: int | None = None,
                    references: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per confirmed trial: mean held-out FID, and dFID against the baseline paired by seed set; and the
    same for each of the method's further ``references`` (domains; None: the study's method's, from its spec)."""
    conf, trials = store.confirmations_frame(study), store.trials_frame(study)
    if n is not None:
        conf = conf[conf.n == n]
    if conf.empty or trials.empty:
        return pd.DataFrame()
    roles = trials.set_index("trial_number").role
    base_nums = [t for t in conf.trial_number.unique() if roles.get(t) == "baseline"]
    if not base_nums:
        return pd.DataFrame()
    spec = read_stored(store, study)
    if references is None:
        references = {} if spec is None else method_for(spec.kind).references(spec)
    domains = list(references)
    base_rows = conf[conf.trial_number == base_nums[0]].set_index("seed_set")
    base = base_rows.fid
    rows = []
    for num, group in conf.groupby("trial_number"):
        g = group.set_index("seed_set")
        delta = (g.fid - base.reindex(g.index)).dropna()
        ci = paired_interval(delta.tolist())
        search = trials[trials.trial_number == num].iloc[0]
        further = {k: v for d in domains for k, v in _reference_numbers(d, search, g, base_rows).items()}
        rows.append(dict(trial_number=int(num), role=roles.get(num), search_fid=search.fid, search_kid=search.kid,
                         **further,
                         heldout_fid=g.fid.mean(), heldout_fid_std=g.fid.std(ddof=1) if len(g) > 1 else 0.0,
                         heldout_kid=g.kid.mean(), delta_fid=delta.mean(),
                         delta_fid_std=delta.std(ddof=1) if len(delta) > 1 else 0.0,
                         delta_fid_low=ci.low, delta_fid_high=ci.high, lower_on=int((delta < 0).sum()),
                         seed_sets=len(g),
                         n=int(g.n.iloc[0]), coefficients=search.coefficients_json))
    table = pd.DataFrame(rows).sort_values(["role", "heldout_fid"]).reset_index(drop=True)
    if spec is not None and spec.confirm.race and n == spec.confirm.n:
        table = _with_race(store, study, spec, table, base_nums[0])
    if spec is not None and n == spec.confirm.n:
        table = opinion_columns(store, study, spec, table, int(base_nums[0]))
    return table


# what a raced confirmation's summary adds (``racing``): the race's interval on the debiased dFID, the seed sets
# each candidate ran, how it ended for it, and the race's last decision in words
RACE_COLUMNS = ("race_delta_fid", "race_low", "race_high", "race_rounds", "race_status", "race_text")


def _with_race(store: Store, study: str, spec, table: pd.DataFrame, baseline: int) -> pd.DataFrame:
    """The summary of a raced confirmation with ``RACE_COLUMNS``, the race replayed from the stored rows and its
    stored entrants (a race from before they were stored: the ones it evaluated on its first seed set)."""
    judged = stored_judged(store, spec)
    fixed = stored_entrants(store.extras_frame(study), spec.confirm.n)
    if fixed is not None:  # stored when the race started
        entered = fixed[1]
    else:  # a race from before they were stored: those evaluated on its first seed set
        entered = sorted(t for t, j in judged if j == 0 and t != baseline)
        entered = [t for t in table.trial_number if t in entered]  # in the search's order of the table
    race = replay(plan_of(spec.confirm, len(entered)), baseline, entered, judged,
                  failures_between(judged, entered))
    out = table.copy()
    rounds = {t: sum(1 for (u, _) in judged if u == t) for t in out.trial_number}
    status, low, high, mean = [], [], [], []
    for t, role in zip(out.trial_number, out.role):
        ci = race.intervals.get(int(t))
        finite = ci is not None and math.isfinite(ci.high - ci.low)
        mean.append(ci.mean if ci is not None else math.nan)
        low.append(ci.low if finite else math.nan)
        high.append(ci.high if finite else math.nan)
        if role == "baseline":
            status.append("baseline")
        elif int(t) in race.left:
            r, why = race.left[int(t)]
            status.append(f"left after {r} seed sets: {why}")
        elif race.done and race.win and race.winner == t:
            status.append("won")
        else:
            status.append("in the race at its end" if race.done else "racing")
    out["race_delta_fid"], out["race_low"], out["race_high"] = mean, low, high
    out["race_rounds"] = [rounds.get(t, 0) for t in out.trial_number]
    out["race_status"] = status
    out["race_text"] = race.last.text if race.last is not None else (
        f"The race has not reached its first look yet ({race.rounds} of {race.plan.max_rounds} seed sets).")
    return out


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
