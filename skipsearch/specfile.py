"""Reading a study spec: a YAML file or a mapping becomes the spec class of its ``kind``, which the method
registry names, and a stored spec is compared with today's.

It sits above the methods (whose spec classes it picks) and ``skipsearch.spec`` (the sections every kind shares),
so neither of those imports the other back.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from skipsearch import textfiles
from skipsearch.errors import UserError
from skipsearch.methods import DEFAULT_KIND, METHODS
from skipsearch.spec import Spec, science
from skipsearch.spec_errors import format_validation_error, shortened

__all__ = ["changed_science", "load_spec", "parse_spec", "parse_stored"]


def parse_spec(raw: object, source: str = "spec") -> Spec:
    """A spec mapping as its kind's spec class; one ``UserError`` line per bad field."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a spec must be a YAML mapping, got {type(raw).__name__}")
    kind = raw.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in METHODS:
        raise UserError(f"{source}: invalid spec\n  kind: must be one of {', '.join(METHODS)} (got {shortened(kind)})")
    try:
        return METHODS[kind].spec_class.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(source, err)) from None


def parse_stored(raw: object, source: str) -> Spec:
    """A spec as a database keeps it, read through today's models: a field added since it was stored takes its
    default, except ``confirm.race``. A study stored before races existed (before 2026-12-06) was confirmed the
    fixed way, and its held-out rows hold what that judged (no debiased FID), so it reads as ``race: false``,
    not as today's raced default."""
    confirm = raw.get("confirm", {}) if isinstance(raw, dict) else None
    if isinstance(confirm, dict) and "race" not in confirm:
        raw = {**raw, "confirm": {**confirm, "race": False}}
    return parse_spec(raw, source)


def load_spec(path: str | Path) -> Spec:
    """A spec file, anchored (``skipsearch.paths``): the relative paths it writes are taken from the file's
    folder, those it leaves at their defaults from the working directory, and all are kept absolute, so a study
    runs and resumes the same from any working directory, and on Ray workers."""
    text = textfiles.read_text(path, "spec file")
    spec = parse_spec(textfiles.parse(text, "yaml", str(path)), str(path))
    return spec.anchored(Path(path).resolve().parent, defaults=Path.cwd())


def _differences(first: object, now: object, prefix: str = "") -> list[str]:
    if isinstance(first, dict) and isinstance(now, dict):
        keys = sorted(set(first) | set(now), key=lambda k: (k not in now, str(k)))
        return [d for k in keys for d in _differences(first.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if first == now else [prefix.rstrip(".")]


def changed_science(first: dict, now: Spec) -> list[str]:
    """Dotted names of the fields that decide the numbers and differ between a stored spec and ``now``.
    The stored spec is read through today's models, so fields added since then compare at their default. Paths
    compare anchored: ``now``'s are absolute, and a study stored with relative text (before paths were anchored)
    meant them from the working directory it ran in, so they are read from this one."""
    after = science(now.anchored(Path.cwd()))
    try:
        before = science(parse_stored(first, "stored spec").anchored(Path.cwd()))
    except UserError:  # stored by a skipsearch whose spec no longer validates: compare what is there
        before = {k: v for k, v in first.items() if k in after}
    return _differences(before, after)
