"""Coefficient files (YAML, JSON, TOML): the coefficients plus the provenance that reproduces their FID.

Writing and reading are one round trip: ``read(write(c, p)).coefficients == c``. Reading goes through the
same limits as specs (size, UTF-8, no YAML aliases, nesting depth) and through the schemas of the
coefficients and of ``Provenance``, so every problem is reported with the field it concerns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tomli_w
import yaml
from pydantic import BaseModel, ValidationError

from skipsearch import textfiles
from skipsearch.errors import UserError
from skipsearch.exchange.provenance import Provenance
from skipsearch.files import atomic_write_text
from skipsearch.methods import ALL_COEFFICIENT_TYPES, Coefficients, method_of
from skipsearch.methods.method import coefficients_adapter
from skipsearch.spec_errors import format_validation_error

FORMAT = "skipsearch-coefficients/1"
FORMATS = ("yaml", "json", "toml")
KEYS = ("format", "kind", "coefficients", "provenance")


@dataclass(frozen=True)
class CoefficientFile:
    coefficients: Coefficients  # e.g. a Skip-Tuning schedule, or Diff-Tuning weights (provenance names their file)
    provenance: Provenance | None = None


def _drop_none(value):
    """TOML has no null; provenance fields that are unknown are simply left out in every format."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def format_of(path: Path, fmt: str | None = None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = "yaml" if fmt == "yml" else fmt
    if fmt not in FORMATS:
        raise UserError(f"unknown coefficient file format {fmt!r} for {path}; valid: {', '.join(FORMATS)}")
    return fmt


def write(cf: CoefficientFile, path: str | Path, fmt: str | None = None) -> Path:
    """Written whole or not at all (a temporary file renamed into place)."""
    path = Path(path)
    provenance = cf.provenance.model_dump(mode="json") if cf.provenance is not None else None
    doc = _drop_none({"format": FORMAT, "kind": method_of(cf.coefficients).kind,
                      "coefficients": cf.coefficients.model_dump(mode="json"), "provenance": provenance})
    text = {"yaml": lambda d: yaml.safe_dump(d, sort_keys=False), "json": lambda d: json.dumps(d, indent=2) + "\n",
            "toml": tomli_w.dumps}[format_of(path, fmt)](doc)
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _unset(model: BaseModel, prefix: str = "") -> str | None:
    """The first field (dotted, nested ones too) the file left out, which the schema would fill with its default.
    Defaults serve coefficients built in Python; a file that omits one would be applied with a value it never
    stated (``apply`` would read a missing ``rho_top`` as 1.0 while its provenance lists other rhos), so
    ``apply`` and ``verify``, which both read files here, refuse it alike."""
    for name in type(model).model_fields:
        if name not in model.model_fields_set:
            return f"{prefix}{name}"
        value = getattr(model, name)
        inner = _unset(value, f"{prefix}{name}.") if isinstance(value, BaseModel) else None
        if inner is not None:
            return inner
    return None


def read(path: str | Path) -> CoefficientFile:
    path = Path(path)
    fmt = format_of(path)
    doc = textfiles.parse(textfiles.read_text(path, "coefficient file"), fmt, str(path))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a skipsearch coefficient file (expected format: {FORMAT})")
    unknown = [str(k) for k in doc if k not in KEYS]
    if unknown:
        raise UserError(f"{path}: invalid coefficient file\n  {unknown[0][:60]}: unknown field")
    try:
        coefficients = coefficients_adapter(ALL_COEFFICIENT_TYPES).validate_python(doc.get("coefficients"))
    except ValidationError as err:
        raise UserError(format_validation_error(str(path), err, prefix="coefficients.")) from None
    unset = _unset(coefficients)
    if unset is not None:
        raise UserError(f"{path}: invalid coefficient file\n  coefficients.{unset}: missing; a coefficient file gives "
                        f"every value of its coefficients (export writes them all), none is filled in with a default")
    kind = method_of(coefficients).kind
    if "kind" in doc and doc["kind"] != kind:
        raise UserError(f"{path}: invalid coefficient file\n  kind: {str(doc['kind'])[:60]!r} does not match the "
                        f"coefficients' family ({kind})")
    provenance = None
    if doc.get("provenance") is not None:
        try:
            provenance = Provenance.model_validate(doc["provenance"])
        except ValidationError as err:
            raise UserError(format_validation_error(str(path), err, prefix="provenance.")) from None
    return CoefficientFile(coefficients, provenance)
