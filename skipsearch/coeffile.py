"""Coefficient files (YAML, JSON, TOML): the coefficients plus the provenance that reproduces their FID.

Writing and reading are one round trip: ``read(write(c, p)).coefficients == c``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
import yaml
from pydantic import BaseModel, ValidationError

from skipsearch import coefficients as _coefficients
from skipsearch.errors import UserError

FORMAT = "skipsearch-coefficients/1"
FORMATS = ("yaml", "json", "toml")


@dataclass(frozen=True)
class CoefficientFile:
    coefficients: BaseModel  # a Skip-Tuning schedule, or Diff-Tuning weights (provenance names their file)
    provenance: dict = field(default_factory=dict)


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
    path = Path(path)
    doc = _drop_none({"format": FORMAT, "kind": _coefficients.kind_of(cf.coefficients),
                      "coefficients": cf.coefficients.model_dump(mode="json"), "provenance": cf.provenance})
    text = {"yaml": lambda d: yaml.safe_dump(d, sort_keys=False), "json": lambda d: json.dumps(d, indent=2) + "\n",
            "toml": tomli_w.dumps}[format_of(path, fmt)](doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def read(path: str | Path) -> CoefficientFile:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"coefficient file not found: {path}")
    fmt = format_of(path)
    try:
        raw = path.read_text()
        doc = {"yaml": yaml.safe_load, "json": json.loads, "toml": tomllib.loads}[fmt](raw)
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"{path}: not valid {fmt.upper()}: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a skipsearch coefficient file (expected format: {FORMAT})")
    try:
        coefficients = _coefficients.ADAPTER.validate_python(doc.get("coefficients"))
    except ValidationError as err:
        raise UserError(f"{path}: invalid coefficients: {err.errors()[0]['msg']}") from None
    return CoefficientFile(coefficients, doc.get("provenance", {}))
