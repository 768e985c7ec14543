"""The tables a user reads at the end of a run and from ``skipsearch best``."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from skipsearch.methods import describe as _describe
from skipsearch.search.readout import Readout
from skipsearch.search.verdict import interval_of, raced as is_raced
from skipsearch.search.verdict import verdict as judge


def describe(coefficients_json: str) -> Text:
    """The coefficients' line as plain text: rich would read a combined study's ``[linear: ...] [freeu: ...]`` as
    markup tags and print nothing of them."""
    return Text(_describe(coefficients_json))


def _measured(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].notna().any()


def _measured_references(frame: pd.DataFrame, readout: Readout, prefix: str = "") -> list[str]:
    """The further references (domains) whose FID some row of ``frame`` has (``{prefix}{domain}_fid``)."""
    return [d for d in readout.references if _measured(frame, f"{prefix}{d}_fid")]


def search_table(trials: pd.DataFrame, top: int = 5, title: str = "Search", readout: Readout = Readout()) -> Table:
    done = trials[trials.state == "COMPLETE"]
    shown = pd.concat([done[done.role == "baseline"], done[done.role == "search"].sort_values("fid").head(top)])
    n_fail, n_pruned = int((trials.state == "FAIL").sum()), int((trials.state == "PRUNED").sum())
    table = Table(title=f"{title}: {len(done)} completed, {n_pruned} pruned, {n_fail} failed trials "
                        f"(N={int(done.n.iloc[0]) if len(done) else 0}, same seeds for every trial)")
    further = _measured_references(done, readout)
    columns = ("trial", "role", "coefficients", "FID", "dFID vs baseline", "KID") + tuple(f"{d} FID" for d in further)
    for col in columns:
        table.add_column(col, justify="left" if col in ("role", "coefficients") else "right")
    for r in shown.itertuples():
        delta = "" if pd.isna(r.delta_fid) else f"{r.delta_fid:+.4f}"
        extra = tuple(f"{getattr(r, f'{d}_fid'):.4f}" for d in further)
        table.add_row(str(r.trial_number), r.role, describe(r.coefficients_json), f"{r.fid:.4f}", delta,
                      f"{r.kid:.5f}", *extra)
    return table


def heldout_table(conf: pd.DataFrame, readout: Readout = Readout()) -> Table:
    sets, n = int(conf.seed_sets.max()), int(conf.n.iloc[0])
    raced = is_raced(conf)
    title = (f"Held-out race: N={n} per seed set, {sets} disjoint seed sets never used in the search (the most any "
             f"entrant ran; who ran how many: 'seed sets')" if raced
             else f"Held-out confirmation: N={n} on {sets} disjoint seed sets never used in the search")
    table = Table(title=title)
    further = _measured_references(conf, readout, "heldout_")
    paired = ("debiased dFID (race's interval)", "seed sets", "in the race") if raced else (
        "dFID (paired, 95% interval)",)
    columns = ("trial", "role", "coefficients", "search FID", "held-out FID (mean ± sd)", *paired,
               "KID") + tuple(c for d in further for c in (f"held-out {d} FID (mean ± sd)", f"d {d} FID"))
    for col in columns:
        table.add_column(col, justify="left" if col in ("role", "coefficients") else "right")
    for r in conf.itertuples():
        extra = tuple(c for d in further for c in (
            f"{getattr(r, f'heldout_{d}_fid'):.4f} ± {getattr(r, f'heldout_{d}_fid_std'):.4f}",
            f"{getattr(r, f'delta_{d}_fid'):+.4f}"))
        judged = (_raced_interval(r), str(int(r.race_rounds)), r.race_status) if raced else (str(interval_of(r)),)
        table.add_row(str(r.trial_number), r.role, describe(r.coefficients), f"{r.search_fid:.4f}",
                      f"{r.heldout_fid:.4f} ± {r.heldout_fid_std:.4f}", *judged,
                      f"{r.heldout_kid:.5f}", *extra)
    return table


def _raced_interval(r) -> str:
    """A raced candidate's debiased dFID and the race's corrected interval at its last look ("" for the baseline,
    no interval before the race's first look)."""
    if pd.isna(r.race_delta_fid):
        return ""
    if pd.isna(r.race_low):
        return f"{r.race_delta_fid:+.4f}"
    return f"{r.race_delta_fid:+.4f} [{r.race_low:+.4f}, {r.race_high:+.4f}]"


def verdict(conf: pd.DataFrame, readout: Readout = Readout()) -> str:
    """One honest sentence: is the winner better than the baseline on held-out seeds (95% paired interval)?"""
    return judge(conf, readout.references).text


def pruning_savings(trials: pd.DataFrame, unit: str = "samples") -> str | None:
    """Sampling time spent, against every trial run to the top rung (pruned ones at the completed mean).
    ``unit``: what the rungs count (the method's fidelity: samples, or training steps)."""
    done, pruned = trials[trials.state == "COMPLETE"], trials[trials.state == "PRUNED"]
    if pruned.empty or done.empty:
        return None
    spent = done.wall_s.sum() + pruned.wall_s.sum()
    full = done.wall_s.sum() + len(pruned) * done.wall_s.mean()
    top = "its last fine-tuning step" if unit == "steps" else f"N={done.n.max()}"
    return (f"Early stopping: {len(pruned)} of {len(done) + len(pruned)} trials pruned at a lower rung; the "
            f"trials took {spent:.1f} s, against about {full:.1f} s had every trial run to {top} "
            f"(pruned trials at the completed trials' mean of {done.wall_s.mean():.2f} s): "
            f"{100 * (1 - spent / full):.0f}% saved.")


def pareto_table(front: pd.DataFrame, readout: Readout) -> Table:
    """The non-dominated trials on the columns the method trades off (``readout.front``: its objectives, and its
    further references' FIDs), headed as the method names them."""
    columns = readout.front or readout.objectives
    names = [readout.name_of(c) for c in columns]
    both = "both" if len(names) == 2 else "all"
    table = Table(title=f"Pareto front ({' vs '.join(names)}, {both} lower is better): {len(front)} trials")
    for col in ("trial", "role", "coefficients", *names):
        table.add_column(col, justify="left" if col in ("role", "coefficients") else "right")
    for r in front.itertuples():
        table.add_row(str(r.trial_number), r.role, describe(r.coefficients_json),
                      *(f"{getattr(r, c):.4f}" for c in columns))
    return table


def print_summary(header: str, trials: pd.DataFrame, conf: pd.DataFrame, console: Console | None = None,
                  pareto: pd.DataFrame | None = None, readout: Readout | None = None) -> None:
    """The end-of-run summary: the search table, the Pareto front, early stopping's savings, the held-out table
    and the verdict. ``readout``: what the study's method says of its columns (``search.readout``; None: FID
    alone)."""
    readout = readout or Readout()
    console = console or Console(width=180, markup=False)  # coefficients and ranges hold brackets, not markup
    console.print(header, markup=False)
    if not trials.empty:
        console.print(search_table(trials, readout=readout))
        if pareto is not None and not pareto.empty:
            console.print(pareto_table(pareto, readout))
        savings = pruning_savings(trials, readout.unit)
        if savings:
            console.print(savings, markup=False)
    if not conf.empty:
        console.print(heldout_table(conf, readout))
        console.print(verdict(conf, readout), markup=False)
