"""Package versions stored with every result, so a number can be reproduced months later."""

from __future__ import annotations

import platform
from importlib import metadata


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("skipsearch", "torch", "torch-fidelity", "optuna", "numpy", "sqlalchemy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
