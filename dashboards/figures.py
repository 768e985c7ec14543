"""The report's figure definitions (plotly). Each takes one study's ``StudyData`` (``skipsearch.htmlreport``)
and returns a figure, or None where it does not apply; ``STUDY_FIGURES`` is their order on the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from skipsearch.metrics.extrapolate import fid_infinity
from skipsearch.search.heldout import pareto_front
from skipsearch.search.readout import Readout, readout
from skipsearch.search.verdict import PairedInterval, interval_of

if TYPE_CHECKING:
    from skipsearch.htmlreport import StudyData

LAYOUT = dict(template="plotly_white", height=380, margin=dict(l=60, r=20, t=30, b=50))


@dataclass(frozen=True, kw_only=True)
class FigureDef:
    id: str
    title: str
    caption: str  # why the figure is drawn the way it is
    build: Callable[[StudyData], go.Figure | None]


def _baseline_at(d: StudyData) -> dict[int, float]:
    """The baseline's FID at every N it was scored at (its rungs, and its final N)."""
    base = d.baseline
    if base is None:
        return {}
    out = {int(r.n): float(r.fid) for r in d.rungs[d.rungs.trial_number == base.trial_number].itertuples()}
    out[int(base.n)] = float(base.fid)
    return out


def delta_fid(d: StudyData) -> go.Figure | None:
    """dFID of each trial against the baseline at the trial's own N (a pruned trial at the rung it stopped)."""
    at = _baseline_at(d)
    rows = d.trials[d.trials.state.isin(["COMPLETE", "PRUNED"]) & (d.trials.role == "search")]
    rows = rows[rows.n.isin(list(at))]
    if rows.empty:
        return None
    fig = go.Figure()
    for (state, n), group in rows.groupby(["state", "n"]):
        fig.add_trace(go.Scatter(
            x=group.trial_number, y=group.fid - at[int(n)], mode="markers", name=f"{state.lower()} at N={int(n)}",
            marker=dict(symbol="circle" if state == "COMPLETE" else "x", size=9 if state == "COMPLETE" else 7),
            text=[d_ for d_ in group.coefficients_json], hovertemplate="trial %{x}: dFID %{y:+.4f}<br>%{text}"))
    fig.add_hline(y=0, line_dash="dash", line_color="grey", annotation_text="baseline")
    fig.update_layout(**LAYOUT, xaxis_title="trial", yaxis_title="FID - baseline FID at the same N")
    return fig


def profile(d: StudyData) -> go.Figure | None:
    if not d.profiles:
        return None
    fig = make_subplots(rows=1, cols=len(d.profiles), subplot_titles=[p.title for p in d.profiles])
    for col, p in enumerate(d.profiles, start=1):
        for curve in p.curves:
            fig.add_trace(go.Scatter(x=list(curve.x), y=list(curve.y), name=curve.label,
                                     mode="lines+markers" if len(curve.x) <= 40 else "lines"), row=1, col=col)
        fig.update_xaxes(title_text=p.x_label, type="log" if p.x_log else "linear", row=1, col=col)
        if p.x_ticks:
            fig.update_xaxes(tickvals=list(range(len(p.x_ticks))), ticktext=list(p.x_ticks), row=1, col=col)
        fig.update_yaxes(title_text=p.y_label, row=1, col=col)
    fig.update_layout(**LAYOUT)
    return fig


def fid_vs_inverse_n(d: StudyData) -> go.Figure | None:
    """FID of the baseline and the shown trial at every N they were scored at, with the FID-infinity line. The
    x axis always runs from 0 (where FID-infinity sits) past the smallest N; a trial scored at one N only has no
    line, and the figure says so rather than leave a reader guessing at a lone dot."""
    fig, drawn, widest, unfitted = go.Figure(), False, 0.0, []
    for label, number in (("baseline", None if d.baseline is None else int(d.baseline.trial_number)),
                          (f"trial {d.shown_trial}", d.shown_trial)):
        if number is None:
            continue
        row = d.trials[d.trials.trial_number == number].iloc[0]
        points = {int(r.n): float(r.fid) for r in d.rungs[d.rungs.trial_number == number].itertuples()}
        points[int(row.n)] = float(row.fid)
        held = d.confirmations[d.confirmations.trial_number == number]
        if not held.empty:
            points[int(held.n.iloc[0])] = float(held.fid.mean())
        ns = sorted(points)
        fit = fid_infinity(ns, [points[n] for n in ns])
        fig.add_trace(go.Scatter(x=[1 / n for n in ns], y=[points[n] for n in ns], mode="markers", name=label,
                                 text=[f"N={n}" for n in ns], hovertemplate="%{text}: FID %{y:.4f}"))
        if fit is not None:
            xs = [0.0, 1 / ns[0]]
            fig.add_trace(go.Scatter(x=xs, y=[fit.fid_inf + fit.slope * x for x in xs], mode="lines",
                                     line_dash="dot", name=f"{label}: FID-inf {fit.fid_inf:.4f}"))
        else:
            unfitted.append(f"{label} (N={ns[0]})")
        widest, drawn = max(widest, 1 / ns[0]), True
    if not drawn:
        return None
    fig.update_layout(**LAYOUT, xaxis_title="1 / N", yaxis_title="FID", xaxis_range=[0.0, 1.15 * widest])
    if unfitted:
        why = ("FID-inf needs FID at two N or more (metric.rungs below metric.n, or confirm.n other than "
               "metric.n).")
        fig.add_annotation(text=f"No FID-inf line: {' and '.join(unfitted)} scored at one N only;<br>{why}",
                           xref="paper", yref="paper", x=0.5, y=1.0, yanchor="bottom", showarrow=False,
                           font=dict(size=12, color="#a33"))
        fig.update_layout(margin=dict(LAYOUT["margin"], t=60))
    return fig


def _intervals(labels: list[str], intervals: list[PairedInterval | None]) -> go.Scatter:
    """Mean dFIDs with their 95% intervals as error bars (none drawn where there is no interval)."""
    means = [None if ci is None else ci.mean for ci in intervals]
    below = [0.0 if ci is None or ci.low is None else ci.mean - ci.low for ci in intervals]
    above = [0.0 if ci is None or ci.high is None else ci.high - ci.mean for ci in intervals]
    return go.Scatter(x=labels, y=means, mode="markers", marker=dict(size=10), name="paired dFID",
                      error_y=dict(type="data", symmetric=False, array=above, arrayminus=below))


def heldout(d: StudyData) -> go.Figure | None:
    rows = d.table[d.table.role != "baseline"] if not d.table.empty else d.table
    if rows.empty:
        return None
    fig = go.Figure(_intervals([f"trial {int(r.trial_number)}" for r in rows.itertuples()],
                               [interval_of(r) for r in rows.itertuples()]))
    fig.add_hline(y=0, line_dash="dash", line_color="grey", annotation_text="baseline")
    fig.update_layout(**LAYOUT, xaxis_title="candidate", yaxis_title="held-out dFID (95% paired interval)")
    return fig


def importances(d: StudyData) -> go.Figure | None:
    if isinstance(d.importances, str) or not d.importances:
        return None
    names = list(d.importances)[::-1]
    fig = go.Figure(go.Bar(x=[d.importances[n] for n in names], y=names, orientation="h"))
    fig.update_layout(**LAYOUT, xaxis_title="importance (fANOVA, share of FID variance)")
    return fig


def pareto(d: StudyData) -> go.Figure | None:
    """Target FID against the first further reference's (Diff-Tuning's source FID), with the front over the two:
    the columns and the axis's name are the method's (``search.readout``). None for a study with no such reference,
    or before a trial has both numbers."""
    shown = readout(d.spec)
    columns = shown.front[:2]
    if len(columns) < 2 or not set(columns) <= set(d.trials.columns):
        return None
    x, y = columns
    done = d.trials[(d.trials.state == "COMPLETE") & d.trials[[x, y]].notna().all(axis=1)]
    if done.empty:
        return None
    front = pareto_front(d.trials, (x, y))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=done[x], y=done[y], mode="markers", name="completed trials",
                             text=[f"trial {n}" for n in done.trial_number]))
    fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines+markers", name="Pareto front",
                             text=[f"trial {n}" for n in front.trial_number]))
    fig.update_layout(**LAYOUT, xaxis_title="target FID", yaxis_title=_axis_name(shown, y))
    return fig


def _axis_name(shown: Readout, column: str) -> str:
    """A further reference's FID with what it measures (``Method.references``: "source FID (forgetting)"); an
    objective by its name."""
    measures = {f"{domain}_fid": f"{domain} FID ({what})" for domain, what in shown.references.items()}
    return measures.get(column) or shown.name_of(column)


def comparison(studies: list[StudyData]) -> go.Figure:
    """Each study's winner: held-out dFID and its interval, labelled with what it is comparable with."""
    labels, intervals = [], []
    for d in studies:
        rows = d.table[d.table.trial_number == d.verdict.trial] if d.verdict.trial is not None else pd.DataFrame()
        s = d.spec
        labels.append(f"{d.name}<br>{s.model.model_id}, NFE {s.sampler.config().nfe}, {s.metric.extractor}")
        intervals.append(None if rows.empty else interval_of(rows.iloc[0]))
    fig = go.Figure(_intervals(labels, intervals))
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(**LAYOUT, yaxis_title="winner's held-out dFID (95% paired interval)")
    return fig


STUDY_FIGURES: tuple[FigureDef, ...] = (
    FigureDef(id="delta-fid", title="dFID per trial against the baseline", build=delta_fid,
              caption="Every trial against the baseline at the same N and seeds; a pruned trial is shown at the "
                      "N where it stopped, never against full-N trials."),
    FigureDef(id="profile", title="The winner's coefficients", build=profile,
              caption="Skip-Tuning: rho per skip from outermost to innermost (and over sigma for a time window). "
                      "Diff-Tuning: the noise-level densities of the new data and the knowledge bank."),
    FigureDef(id="fid-inf", title="FID against 1/N, with the FID-infinity extrapolation", build=fid_vs_inverse_n,
              caption="FID is biased upward by about 1/N; the dotted line fits FID = FID_inf + k/N over the search "
                      "rungs and the held-out N (Chong & Forsyth 2020)."),
    FigureDef(id="heldout", title="Held-out confirmation", build=heldout,
              caption="Each candidate's dFID against the baseline, paired by held-out seed set, with the 95% "
                      "t interval over the seed sets; a win needs the whole interval below 0."),
    FigureDef(id="importances", title="Parameter importances", build=importances,
              caption="Optuna's fANOVA over the completed trials (seeded)."),
    FigureDef(id="pareto", title="Target and source FID (forgetting)", build=pareto,
              caption="Completed fine-tuning trials; the front holds those no other trial beats on both."),
)
