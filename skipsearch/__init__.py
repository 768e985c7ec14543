"""skipsearch: black-box search for diffusion-model coefficients (Skip-Tuning, Diff-Tuning) that lower FID.

The public verbs are loaded lazily and importing the package does nothing else: ``skipsearch.apply`` (in a
user's own sampling code) loads torch and pydantic, never Optuna, Ray, SQLAlchemy, typer or pandas.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run": "skipsearch.api", "best": "skipsearch.api", "export": "skipsearch.api",
    "apply": "skipsearch.exchange.apply_file",
    "verify": "skipsearch.api", "trials": "skipsearch.api", "confirmations": "skipsearch.api",
    "RunResult": "skipsearch.api", "BestTrial": "skipsearch.api", "Verdict": "skipsearch.api",
    "pareto": "skipsearch.api", "studies": "skipsearch.api", "delete": "skipsearch.api", "report": "skipsearch.api",
    "UserError": "skipsearch.errors", "load_model": "skipsearch.models", "model_info": "skipsearch.models",
    "Spec": "skipsearch.spec", "load_spec": "skipsearch.specfile",
    "sample": "skipsearch.exchange.sample", "Samples": "skipsearch.exchange.sample",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'skipsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The verbs too, though they load on first use: what ``dir(skipsearch)`` and completion offer."""
    return sorted(set(globals()) | set(__all__))
