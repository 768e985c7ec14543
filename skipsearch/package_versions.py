"""The package versions stored with every result, so that a number can be reproduced months later. Down here
because the driver records them with each trial and the exported file's provenance shows them: neither should
import the other for it."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("skipsearch", "torch", "torch-fidelity", "optuna", "numpy", "sqlalchemy")


def versions() -> dict[str, str]:
    """Python's version and each of ``PACKAGES``' ("not installed" where it is not)."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
