"""The method registry: a spec's ``kind`` -> its ``Method``, and coefficients -> the method that owns them.

To add a method, write a folder beside ``skip_tuning/`` with a ``Method`` subclass (spec section, space,
trial, fidelity, apply) and add an instance to ``METHODS``. Nothing outside ``methods/`` names a method.
This module is light: each method's heavy parts are imported where they run.
"""

from __future__ import annotations

from skipsearch.errors import UserError
from skipsearch.methods.method import Coefficients, Fidelity, Method, coefficients_adapter
from skipsearch.methods.diff_tuning import DiffTuning
from skipsearch.methods.freeu import FreeUMethod
from skipsearch.methods.skip_tuning import SkipTuning

METHODS: dict[str, Method] = {m.kind: m for m in (SkipTuning(), DiffTuning(), FreeUMethod())}
DEFAULT_KIND = "skip_tuning"  # a spec without ``kind``

__all__ = ["ALL_COEFFICIENT_TYPES", "DEFAULT_KIND", "METHODS", "Coefficients", "Fidelity", "Method", "describe",
           "method_for", "method_of", "parse_coefficients"]


def method_for(kind: str) -> Method:
    if kind not in METHODS:
        raise UserError(f"unknown study kind {kind!r}; valid: {', '.join(METHODS)}")
    return METHODS[kind]


def method_of(coefficients: Coefficients) -> Method:
    """The method whose coefficients these are."""
    for method in METHODS.values():
        if isinstance(coefficients, method.coefficient_types):
            return method
    raise UserError(f"{type(coefficients).__name__} are not any method's coefficients")


ALL_COEFFICIENT_TYPES = tuple(t for m in METHODS.values() for t in m.coefficient_types)


def parse_coefficients(text: str) -> Coefficients:
    """Any method's coefficients from their JSON form, as the database stores them."""
    return coefficients_adapter(ALL_COEFFICIENT_TYPES).validate_json(text)


def describe(coefficients_json: str) -> str:
    """Stored coefficients in one line, as their method writes them (tables, notes, verdicts)."""
    return parse_coefficients(coefficients_json).describe()
