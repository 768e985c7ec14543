"""``apply(model, coefficients)``: put searched coefficients on a model, all or nothing, and take them off again.

The coefficients' method decides what applying means (Skip-Tuning: hooks on the model's skip points;
Diff-Tuning: the fine-tuned weights its file names). Everything is checked before the model is touched.
This module imports no database, Optuna, Ray, typer or pandas, so a user's own sampling code pays only for
torch (``tests/test_imports.py`` checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from skipsearch.errors import UserError
from skipsearch.exchange import coeffile
from skipsearch.methods import Coefficients, method_of
from skipsearch.methods.method import Removable


def disagreeing(path: str | Path, disagreements: list[str]) -> str:
    """The message for a coefficient file that disagrees with itself, one field a line (``apply`` and
    ``verify`` word it alike)."""
    return f"{path}: the coefficient file disagrees with itself\n  " + "\n  ".join(disagreements)


def apply(model: nn.Module | Any, coefficients: str | Path | Coefficients) -> Removable:
    """Put coefficients (or a coefficient file's) on a model or a diffusers pipeline (its UNet); use as
    ``with apply(pipe, f):`` or ``.remove()``."""
    if not isinstance(model, nn.Module) and not isinstance(getattr(model, "unet", None), nn.Module):
        hint = "; pass its .denoiser" if hasattr(model, "denoiser") else ""
        raise UserError(f"apply takes a torch.nn.Module or a diffusers pipeline, got {type(model).__name__}{hint}")
    provenance = None
    if isinstance(coefficients, (str, Path)):
        path, cf = coefficients, coeffile.read(coefficients)
        coefficients, provenance = cf.coefficients, cf.provenance
        disagree = [] if provenance is None else method_of(coefficients).disagreements(coefficients, provenance)
        if disagree:  # what verify exits 1 for is refused here, before the model is touched
            raise UserError(disagreeing(path, disagree))
    if not isinstance(coefficients, Coefficients):
        raise UserError(f"apply takes a coefficient file or coefficients, got {type(coefficients).__name__}")
    return method_of(coefficients).apply(model, coefficients, provenance)
