"""skipsearch: black-box search for diffusion-model coefficients (Skip-Tuning) that lower FID.

The public verbs are loaded lazily, so ``import skipsearch.networks`` (say, in a training script on a
machine without Optuna) needs nothing but torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run": "skipsearch.api", "best": "skipsearch.api", "export": "skipsearch.api", "apply": "skipsearch.applying",
    "verify": "skipsearch.api", "trials": "skipsearch.api", "RunResult": "skipsearch.api",
    "studies": "skipsearch.api", "delete": "skipsearch.api",
    "UserError": "skipsearch.errors", "load_model": "skipsearch.models",
    "Spec": "skipsearch.spec", "load_spec": "skipsearch.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'skipsearch' has no attribute {name!r}")
