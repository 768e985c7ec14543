"""A table's rows with their numbers and extras put back beside them: what ``Store``'s frames and records read.

Every number is a row of ``skipsearch_measurements`` and every method's own value a row of ``skipsearch_extras``
(``records``). Readers want one row per trial (rung, step, held-out evaluation) with its numbers as columns, as
the tables had them: FID, KID and KID's spread in the record's feature space (``fid``, ``kid``, ``kid_std``), the
same against a method's further references (``source_fid``), and the method's extras under their names
(``weights_path``). Numbers in other feature spaces, and other metrics, are the report's (``search.measured``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from skipsearch.storage.records import NUMBERS, TARGET, number_column

KEYS = {"trial": ("trial_number",), "rung": ("trial_number", "n"), "step": ("trial_number", "step"),
        "confirmation": ("trial_number", "seed_set", "n")}  # what tells one stage's records apart


@dataclass(frozen=True)
class Layout:
    """Where a stage's columns go back: its numbers after ``numbers_after``, the references' numbers and the
    extras before ``others_before`` (where the old tables had them, so that frames keep their column order)."""

    numbers: tuple[str, ...]
    numbers_after: str
    others_before: str


LAYOUTS = {"trial": Layout(NUMBERS, "coefficients_json", "evaluated"),
           "rung": Layout(("fid", "kid"), "n", "wall_s"),
           "step": Layout(("fid", "kid"), "n", "wall_s"),
           "confirmation": Layout(NUMBERS, "n", "created_at")}


def _numbers(rows: pd.DataFrame, measured: pd.DataFrame, stage: str,
             extractor: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    """One column per number of ``stage``'s records in each record's own feature space (``extractor``, aligned
    with ``rows``), indexed by the stage's key; and the references' columns, by domain, then as ``NUMBERS``."""
    keys = list(KEYS[stage])
    m = measured[(measured.stage == stage) & measured.metric.isin(NUMBERS)] if not measured.empty else measured
    if not m.empty:
        m = m.merge(rows[keys].assign(extractor=extractor.to_numpy()), on=[*keys, "extractor"], how="inner")
    if m.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=keys)), []
    pairs = sorted({(d, metric) for d, metric in zip(m.domain, m.metric) if d != TARGET},
                   key=lambda p: (p[0], NUMBERS.index(p[1])))
    names = [number_column(d, metric) for d, metric in zip(m.domain, m.metric)]
    wide = m.assign(column=names).pivot(index=keys, columns="column", values="value")
    return wide.astype("float64"), [number_column(*p) for p in pairs]


def _extras(rows: pd.DataFrame, extras: pd.DataFrame, stage: str) -> pd.DataFrame:
    """One column per extra of ``stage``'s records, its JSON value decoded, indexed by the stage's key."""
    keys = list(KEYS[stage])
    e = extras[extras.stage == stage] if not extras.empty else extras
    if e.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=keys))
    wide = e.assign(value=[json.loads(v) for v in e.value_json]).pivot(index=keys, columns="name", values="value")
    wide.columns.name = None
    out = pd.DataFrame(index=wide.index)
    # in the order the method gave them, each its own type (a column of ints stays ints where every row has one)
    for name in dict.fromkeys(e.name):
        out[name] = pd.Series(wide[name].tolist(), index=wide.index).infer_objects()
    return out


def _missing_kept(values: pd.Series, index: pd.Index) -> pd.Series:
    """An extra's column over every record: integers stay integers (``Int64``) and strings strings (``None``) where
    a record has none, rather than turning into floats and NaN."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64").reindex(index)
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean").reindex(index)
    if pd.api.types.is_float_dtype(values.dtype):
        return values.reindex(index)
    out = values.astype(object).reindex(index)
    return out.where(out.notna(), None)


def joined(rows: pd.DataFrame, measured: pd.DataFrame, extras: pd.DataFrame, stage: str,
           extractor: pd.Series) -> pd.DataFrame:
    """``rows`` (a stage's table, as read) with its numbers and extras as columns, in the old tables' order. A
    number never measured is NaN; the references and extras of no record are not columns at all."""
    layout, keys = LAYOUTS[stage], list(KEYS[stage])
    numbers, references = _numbers(rows, measured, stage, extractor)
    more = _extras(rows, extras, stage)
    indexed = rows.set_index(keys, drop=False)
    values = {}
    for name in layout.numbers:
        values[name] = (numbers[name].reindex(indexed.index) if name in numbers.columns
                        else pd.Series(float("nan"), index=indexed.index, dtype="float64"))
    others = {c: numbers[c].reindex(indexed.index) for c in references}
    others |= {c: _missing_kept(more[c], indexed.index) for c in more.columns if c not in others}
    columns = list(rows.columns)
    at = columns.index(layout.numbers_after) + 1
    columns[at:at] = list(values)
    before = columns.index(layout.others_before)
    columns[before:before] = list(others)
    out = indexed.assign(**(values | others))  # aligned on the key, each column keeping its type
    return out[columns].reset_index(drop=True)


def with_delta(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials frame with ``delta_fid`` after ``kid_std``: a completed trial's FID minus the completed
    baseline's (NaN for the rest, and for all while there is no completed baseline)."""
    done = frame.state == "COMPLETE"
    base = frame[done & (frame.role == "baseline")].fid
    delta = frame.fid - base.iloc[0] if len(base) else pd.Series(float("nan"), index=frame.index)
    out = frame.copy()
    out.insert(out.columns.get_loc("kid_std") + 1, "delta_fid", delta.where(done).astype("float64"))
    return out


__all__ = ["KEYS", "TARGET", "joined", "with_delta"]
