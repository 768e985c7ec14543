"""The public DataFrames, ``skipsearch.trials`` and ``skipsearch.confirmations``: the same column types on
SQLite and PostgreSQL, and one column per coefficient field beside the stored JSON. Their schema is in
README.md, "Reading results with pandas".

Their columns never depend on the study's method: each frame has every registered method's own columns
(``Method.columns``: Diff-Tuning's source FID, weights file, training seed), in one place and with one dtype, and
NaN, None or <NA> where the study's method has none. This module asks the registry for them and names none."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Boolean, DateTime, Float, Integer, Table

from skipsearch.errors import UserError
from skipsearch.exchange.export import stored_spec
from skipsearch.methods import METHODS, method_for, parse_coefficients
from skipsearch.search.heldout import RACE_COLUMNS, heldout_reported, heldout_summary
from skipsearch.search.measured import KEYS, reported
from skipsearch.search.second_opinion import COLUMNS as OPINION_COLUMNS
from skipsearch.storage import Store
from skipsearch.storage import tables as _tables

# Where the methods' own columns go in each frame (``Method.columns``): before this shared column.
_METHOD_COLUMNS_BEFORE = {"trials": "evaluated", "confirmations": "created_at", "summary": "heldout_fid"}


def method_columns(frame: str) -> dict[str, str]:
    """Every registered method's own columns of ``frame`` ("trials", "confirmations", "summary"), column ->
    dtype, in the registry's order (a column two methods declare is placed, and typed, by the first)."""
    out: dict[str, str] = {}
    for method in METHODS.values():
        for name, dtype in method.columns.get(frame, {}).items():
            out.setdefault(name, dtype)
    return out


# What ``confirmations`` returns before its coefficient columns (``heldout_summary``'s columns, and the methods'
# own; an unconfirmed study gets an empty frame with these).
_SUMMARY_HEAD = ("trial_number", "role", "search_fid", "search_kid")
_SUMMARY_TAIL = ("heldout_fid", "heldout_fid_std", "heldout_kid", "delta_fid", "delta_fid_std", "delta_fid_low",
                 "delta_fid_high", "lower_on", "seed_sets", "n", "coefficients", *RACE_COLUMNS, *OPINION_COLUMNS)
CONFIRMATION_COLUMNS = (*_SUMMARY_HEAD, *method_columns("summary"), *_SUMMARY_TAIL)
_SUMMARY_INTEGERS = ("trial_number", "lower_on", "seed_sets", "n", "opinion_seed_sets")
_RACE_TEXT = ("race_status", "race_text")
_SUMMARY_TEXT = ("role", "coefficients", *_RACE_TEXT, "opinion_extractor", "opinion_why")
# missing where it does not apply: the second opinion's N on a trial it was not taken on, a fixed confirmation's
# race rounds
_SUMMARY_NULLABLE = {"opinion_n": "Int64", "race_rounds": "Int64"}
COLLISION_PREFIX = "coef_"  # a coefficient field named like a column already in the frame (say ``n``): ``coef_n``


def _with_race_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The summary with the race's columns also where the confirmation was fixed (``confirm.race: false``), empty
    there (NaN, None, <NA>), before the second opinion's: a frame's columns never depend on how it was confirmed."""
    missing = [c for c in RACE_COLUMNS if c not in table.columns]
    if not missing:
        return table
    out = table.copy()
    at = list(out.columns).index(OPINION_COLUMNS[0]) if OPINION_COLUMNS[0] in out.columns else len(out.columns)
    for i, c in enumerate(missing):
        out.insert(at + i, c, None if c in _RACE_TEXT else float("nan"))
    return out


def require_study(store: Store, study: str) -> None:
    """UserError naming the study and the database when the study is not there."""
    if store.study_spec(study) is None:
        raise UserError(f"no study named {study!r} in {store.shown_url}")


def _flat_coefficients(text: object) -> dict[str, Any] | None:
    """A coefficient JSON's fields, a list field spread over ``name_0``, ``name_1``...; None when it does not
    parse (a recovered trial's ``{"incomplete_params": ...}``)."""
    try:
        values = parse_coefficients(text).model_dump(mode="json")
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return None
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, list):
            flat.update({f"{name}_{i}": item for i, item in enumerate(value)})
        else:
            flat[name] = value
    return flat


def _typed(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """A table's frame with the same dtypes on every backend and for every row: floats float64 (NULL: NaN),
    integers int64 (Int64 where NULL is allowed), booleans boolean, times in UTC."""
    out = frame.copy()
    for column in table.columns:
        if column.name not in out.columns:
            continue
        if isinstance(column.type, DateTime):
            out[column.name] = pd.to_datetime(out[column.name], utc=True)
        elif isinstance(column.type, Float):
            out[column.name] = out[column.name].astype("float64")
        elif isinstance(column.type, Integer):
            out[column.name] = out[column.name].astype("Int64" if column.nullable else "int64")
        elif isinstance(column.type, Boolean):
            out[column.name] = out[column.name].astype("boolean")
    return out


def with_method_columns(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The frame with every registered method's own columns of ``kind`` (``method_columns``), in their declared
    order before ``_METHOD_COLUMNS_BEFORE[kind]`` and with their declared dtypes: the study's own values where
    its store frame has them, else NaN, None or <NA>. The other columns keep their order."""
    declared = method_columns(kind)
    rest = [c for c in frame.columns if c not in declared]
    anchor = _METHOD_COLUMNS_BEFORE[kind]
    at = rest.index(anchor) if anchor in rest else len(rest)
    out = frame[rest].copy()
    for offset, (name, dtype) in enumerate(declared.items()):
        out.insert(at + offset, name, _declared(frame[name] if name in frame.columns else None, dtype, frame.index))
    return out


def _declared(values: pd.Series | None, dtype: str, index: pd.Index) -> pd.Series:
    """A method's column with its declared dtype; None: the study has none (NaN, <NA>). "str" is text as a
    text column reads from the database: pandas' string dtype where some row has a value, missing ones NaN; and
    None in an object column where no row has one."""
    if dtype != "str":
        return (pd.Series([None] * len(index), index=index, dtype=dtype) if values is None
                else values.astype(dtype))
    items = [] if values is None else [None if pd.api.types.is_scalar(v) and pd.isna(v) else v for v in values]
    if all(v is None for v in items):
        return pd.Series([None] * len(index), index=index, dtype=object)
    return pd.Series(items, index=index)


def _with_coefficient_columns(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """The frame and one column per coefficient field found in ``source`` (first seen, first placed); a row
    whose coefficients do not parse gets NaN there. A field named like an existing column is prefixed."""
    parsed = [_flat_coefficients(text) for text in frame[source]]
    out = frame.copy()
    for name in dict.fromkeys(key for flat in parsed if flat for key in flat):
        column = name
        while column in out.columns:
            column = COLLISION_PREFIX + column
        values = [flat.get(name) if flat else None for flat in parsed]
        out[column] = pd.Series(values, index=frame.index)
    return out


def _with_reported(frame: pd.DataFrame, extra: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """The frame and the report's columns (``search.measured``), joined on ``keys``; NaN where a row has none
    (a trial run before the report was added). Nothing reported: the frame as it is, column for column."""
    if len(extra.columns) == len(keys):
        return frame
    return frame.merge(extra, on=list(keys), how="left")


def trials(store: Store, study: str) -> pd.DataFrame:
    require_study(store, study)
    frame = with_method_columns(_typed(store.trials_frame(study), _tables.trials), "trials")
    extra = reported(store, study, "trial", stored_spec(store, study).metric.extractor)
    return _with_coefficient_columns(_with_reported(frame, extra, KEYS["trial"]), "coefficients_json")


def confirmations(store: Store, study: str, per_seed_set: bool = False) -> pd.DataFrame:
    require_study(store, study)
    spec = stored_spec(store, study)
    if per_seed_set:
        roles = store.trials_frame(study)[["trial_number", "role", "coefficients_json"]]
        rows = with_method_columns(_typed(store.confirmations_frame(study), _tables.confirmations), "confirmations")
        extra = reported(store, study, "confirmation", spec.metric.extractor)
        rows = _with_reported(rows, extra, KEYS["confirmation"])
        return _with_coefficient_columns(rows.merge(roles, on="trial_number", how="left"), "coefficients_json")
    table = heldout_summary(store, study, spec.confirm.n, method_for(spec.kind).references(spec))
    table = pd.DataFrame(columns=list(CONFIRMATION_COLUMNS)) if table.empty else _with_race_columns(table)
    own = method_columns("summary")
    table = table.astype({c: _SUMMARY_NULLABLE.get(c, "int64" if c in _SUMMARY_INTEGERS else "float64")
                          for c in CONFIRMATION_COLUMNS if c not in (*_SUMMARY_TEXT, *own) and c in table.columns})
    table = with_method_columns(table, "summary")
    if not table.empty:
        extra = heldout_reported(store, study, spec.confirm.n, spec.metric.extractor)
        table = _with_reported(table, extra, ("trial_number",))
    return _with_coefficient_columns(table, "coefficients")
