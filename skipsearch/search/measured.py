"""The numbers a spec's ``metric.report`` measured, read back as one column per number.

Every number lives in ``skipsearch_measurements`` as a row (trial, stage, N, seed set, domain, metric,
extractor, value). Readers want them beside the trial's other columns, so each (domain, metric, extractor) becomes
a column named ``METRIC@EXTRACTOR`` (``precision@skipsearch-digits``, ``fid@inception-v3-compat``), with the domain
in front for a second reference (``source_recall@skipsearch-digits``), as ``source_fid`` is named. The objective's
own rows (fid, kid and kid_std in ``metric.extractor``) are the frame's ``fid``/``kid`` columns already and are left
out, so a study that reports nothing reads exactly as before.
"""

from __future__ import annotations

import pandas as pd

from skipsearch.storage import Store

OBJECTIVE_VALUES = ("fid", "kid", "kid_std")  # what every score stores in the objective's extractor
KEYS = {"trial": ("trial_number",), "rung": ("trial_number", "n"), "step": ("trial_number", "step"),
        "confirmation": ("trial_number", "seed_set", "n")}  # what tells one stage's records apart


def column(metric: str, extractor: str, domain: str = "target") -> str:
    """A reported number's column: ``METRIC@EXTRACTOR``, ``DOMAIN_METRIC@EXTRACTOR`` for a second reference."""
    return f"{metric}@{extractor}" if domain == "target" else f"{domain}_{metric}@{extractor}"


def reported(store: Store, study: str, stage: str, objective: str) -> pd.DataFrame:
    """One row per record of ``stage`` (its ``KEYS``) that has reported numbers, one float64 column per number;
    an empty frame when the study reports nothing there. ``objective``: the study's ``metric.extractor``."""
    keys = list(KEYS[stage])
    rows = store.measurements_frame(study)
    if not rows.empty:
        rows = rows[(rows.stage == stage) & ~(rows.metric.isin(OBJECTIVE_VALUES) & (rows.extractor == objective))]
    if rows.empty:
        return pd.DataFrame(columns=keys)
    names = [column(m, e, d) for m, e, d in zip(rows.metric, rows.extractor, rows.domain)]
    order = sorted(dict.fromkeys(zip(rows.domain != "target", rows.extractor != objective, rows.extractor,
                                     rows.metric, names)))
    wide = rows.assign(column=names).pivot(index=keys, columns="column", values="value")
    wide = wide[[name for *_, name in order]].astype("float64").reset_index()
    wide.columns.name = None
    return wide.astype({k: "int64" for k in keys})


def stored_extra(extras: pd.DataFrame, stage: str, name: str, n: int):
    """The JSON value of the extra ``name`` stored at ``stage`` and ``n`` (a study's own record of how a stage
    ran: a race's entrants, the second opinion's space), or None when there is none."""
    import json

    if extras.empty:
        return None
    rows = extras[(extras.stage == stage) & (extras.name == name) & (extras.n == n)]
    return None if rows.empty else json.loads(rows.value_json.iloc[0])
