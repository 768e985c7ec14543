"""Diff-Tuning's ``apply``: load the fine-tuned weights a coefficient file names into the user's model, all or
nothing, and put the old weights back on exit. Every tensor is checked (names, shapes, dtypes, finite
values) before the model is touched; the file is loaded with ``weights_only=True`` and its hash checked."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from skipsearch import safeload
from skipsearch.errors import UserError
from skipsearch.files import file_hash


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
