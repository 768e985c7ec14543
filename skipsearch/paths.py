"""One rule for the paths a spec names: a relative path is taken from the spec file's folder, and stored absolute.

A relative path written in a spec file is read from that file's folder. A path left at its default (a spec that
does not name ``finetune.weights_dir``) and every relative path of a spec given as a Python object (no file) are
read from the working directory, as any program reads them. Either way the spec is anchored before anything is
checked or stored, and the study keeps the absolute path: a Ray worker (whose working directory is a trial folder
of Ray's), ``verify`` of an export and a rerun from another folder then all read the same file, and the same spec
run from two folders is the same study.

A spec field says that it holds a path with a marker in its type (``fields.FilePath``, ``fields.OutputFolder``,
``fields.DataName``), and ``fields.Section.anchored`` rewrites every marked field. A new path field is therefore
anchored, listed for the Ray workers' check (``search.worker_paths``) and compared resolved by declaring its type,
with no code of its own. Standard library only: the spec's field types import this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# The data-set kinds whose name carries a path, ``KIND:PATH`` (the keys of ``data.PATH_DATASETS``).
PATH_KINDS = ("folder", "npz")


def absolute(text: str, base: Path | str) -> str:
    """``text`` as an absolute, normalised path: ``~`` expanded, a relative path joined to ``base``. Lexical only
    (symlinks are kept as written), so the stored text is the one the user would recognise; ``base`` is a
    resolved folder, so a leading ``..`` still means its real parent."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(text)))


def data_path(name: str) -> tuple[str, str] | None:
    """(kind, path) of a data-set name that holds a path (``npz:ref.npz``); None for a built-in set's name, or for
    ``KIND:`` with nothing after it (``data.check_name`` says what is missing)."""
    kind, sep, path = name.partition(":")
    return (kind, path) if sep and kind in PATH_KINDS and path else None


@dataclass(frozen=True)
class PathMarker:
    """What a spec field's text is: ``input`` a file or folder that must exist, ``output`` a folder skipsearch
    writes into (created when missing), ``data`` a data-set name that may hold a path (``KIND:PATH``)."""

    role: Literal["input", "output", "data"]

    def anchor(self, text: str, base: Path) -> str:
        """The field's text with its path made absolute from ``base``."""
        if self.role != "data":
            return absolute(text, base)
        found = data_path(text)
        return text if found is None else f"{found[0]}:{absolute(found[1], base)}"

    def path_in(self, text: str) -> str | None:
        """The path the field's text names, None where it names none (a built-in data set)."""
        if self.role != "data":
            return text
        found = data_path(text)
        return None if found is None else found[1]


INPUT = PathMarker("input")
OUTPUT = PathMarker("output")
DATA = PathMarker("data")


@dataclass(frozen=True)
class SpecPath:
    """A path a spec names: the field (dotted), the path, and whether skipsearch reads it or writes into it."""

    field: str
    path: str
    output: bool = False
