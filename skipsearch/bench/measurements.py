"""A benchmark's result as records ``{name, value, target, met, device}``: printed as a table, and written as
JSON (``skipsearch bench --json FILE``) so that commits can be compared."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass
from pathlib import Path

from skipsearch.files import atomic_write

_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Record:
    """One measured figure; ``target`` like ``">= 0.95"`` (None: reported, not judged)."""

    name: str
    value: float
    target: str | None
    met: bool | None
    device: str

    @classmethod
    def judged(cls, name: str, value: float, target: str | None, device: str) -> Record:
        met = None
        if target is not None:
            op, bound = target.split()
            met = bool(_COMPARE[op](value, float(bound)))
        return cls(name=name, value=float(value), target=target, met=met, device=str(device))


def show(records: list[Record], title: str) -> None:
    """The records as a table on stdout (flushed: a long benchmark shows each part as it ends)."""
    print(title)
    width = max((len(r.name) for r in records), default=10)
    for r in records:
        verdict = "" if r.met is None else ("met" if r.met else "MISSED")
        target = f"target {r.target}" if r.target else ""
        print(f"  {r.name:{width}s} {r.value:12.5g}  {target:16s} {verdict:6s} [{r.device}]", flush=True)


def write_json(path: Path, records: list[Record]) -> None:
    """All records as a JSON list, written atomically."""
    text = json.dumps([asdict(r) for r in records], indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
