"""How a spec's (or a coefficient file's) validation error reads: one line per bad field, named as the reader
wrote it (dotted, with list indices and without pydantic's model-family tags), with a shortened copy of what was
given. Kept apart from ``spec``, which says what a valid spec is."""

from __future__ import annotations

from pydantic import ValidationError

from skipsearch.models import FAMILIES


def shortened(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_tags(loc: tuple) -> tuple:
    """pydantic puts the chosen family's tag in the location (model.diffusers.path); a reader wrote model.path."""
    tags = {f.name for f in FAMILIES}
    return tuple(p for i, p in enumerate(loc) if not (i and loc[i - 1] == "model" and p in tags))


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    """One line per bad field: its dotted name, the reason, and (shortened) what was given."""
    lines = [f"{source}: invalid {'spec' if not prefix else prefix.rstrip('.')}"]
    for e in err.errors():
        loc = _without_tags(e["loc"])
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")  # report[1].metric
        field = prefix + dotted if loc else (prefix.rstrip(".") or "(top level)")
        reason = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        quiet = e["type"] in ("extra_forbidden", "missing", "value_error")
        shown = "" if quiet else f" (got {shortened(e.get('input'))})"
        lines.append(f"  {field}: {reason}{shown}")
    return "\n".join(lines)
