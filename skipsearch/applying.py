"""``apply(model, coefficients)``: put searched coefficients on a model, all or nothing, and take them off again.

Skip-Tuning coefficients become forward hooks on the model's skip points; Diff-Tuning coefficients load
the fine-tuned weights their file names. Everything is checked before the model is touched: a schedule
that does not fit the model's skips, or weights that do not fit its tensors, leave the model as it was.
This module imports no database, Optuna or Ray, so a user's own sampling code pays only for torch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from skipsearch import coeffile, safeload
from skipsearch.adapters import Applied, apply_coefficients
from skipsearch.difftuning import DiffTuningWeights
from skipsearch.errors import UserError
from skipsearch.models import file_hash


def _fit(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor of the model is in the file with its shape, and nothing else is: checked before loading."""
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    unfit = [k for k in own if k in state and own[k].is_floating_point() != state[k].is_floating_point()]
    if missing or extra or wrong or unfit:
        first = (f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else
                 f"{len(extra)} unknown tensors (e.g. {extra[0]})" if extra else
                 f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the model's is {tuple(own[wrong[0]].shape)}"
                 if wrong else f"{unfit[0]} has dtype {state[unfit[0]].dtype}, the model's is {own[unfit[0]].dtype}")
        raise UserError(f"{path} does not fit this model: {first}; nothing was changed")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{path}: tensor {bad[0]} holds NaN or inf values; nothing was changed")


class LoadedWeights:
    """Fine-tuned weights loaded into a model; ``remove()`` (or leaving ``with``) puts the old ones back."""

    def __init__(self, model: nn.Module, path: Path, expected_hash: str | None):
        if not path.is_file():
            raise UserError(f"fine-tuned weights not found: {path} (the coefficient file names it)")
        if expected_hash and file_hash(path) != expected_hash:
            raise UserError(f"{path}: its hash {file_hash(path)} differs from the recorded {expected_hash}")
        net = getattr(model, "net", model)
        state = safeload.state_dict(path, "fine-tuned weights")
        _fit(net, state, path)
        self.model, self._old = net, {k: v.detach().clone() for k, v in net.state_dict().items()}
        try:
            net.load_state_dict(state)
        except BaseException:
            net.load_state_dict(self._old)  # a failure half-way leaves the model as it was
            raise

    def remove(self) -> None:
        if self._old is not None:
            self.model.load_state_dict(self._old)
            self._old = None

    def __enter__(self) -> LoadedWeights:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def apply(model: nn.Module, coefficients: str | Path | BaseModel) -> Applied | LoadedWeights:
    """Put coefficients (or a coefficient file's) on a model; use as ``with apply(model, f):`` or ``.remove()``.

    A Diff-Tuning file loads its fine-tuned weights (``weights_only=True``, hash checked) instead.
    """
    if not isinstance(model, nn.Module):
        hint = "; pass its .denoiser" if hasattr(model, "denoiser") else ""
        raise UserError(f"apply takes a torch.nn.Module, got {type(model).__name__}{hint}")
    provenance = None
    if isinstance(coefficients, (str, Path)):
        cf = coeffile.read(coefficients)
        coefficients, provenance = cf.coefficients, cf.provenance
    if isinstance(coefficients, DiffTuningWeights):
        if provenance is None or provenance.weights is None:
            raise UserError("Diff-Tuning weights are applied from a coefficient file that names its weights file "
                            "(provenance.weights)")
        return LoadedWeights(model, Path(provenance.weights.path), provenance.weights.sha256_16)
    return apply_coefficients(model, coefficients)
