"""``SkipScaling``: pre-hooks that multiply each skip point by its rho, on one model, removable as a unit.

The denoiser's own call is hooked first, to capture sigma (per sample) for noise-dependent rho; then
each module that consumes skips gets one pre-hook scaling all of its points. ``rhos(sigma)`` gives one
rho per point, in the points' order. Nothing stays on the model after ``remove()``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from skipsearch.errors import UserError
from skipsearch.hooks.points import Rho, SkipPoint

SigmaOf = Callable[[tuple, dict], torch.Tensor]  # the denoiser's (args, kwargs) -> sigma, shape (B,) or (1,)
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, SkipScaling] = weakref.WeakKeyDictionary()


def active_on(model: nn.Module) -> SkipScaling | None:
    """The scaling currently installed on ``model``, if any."""
    return _ACTIVE.get(model)


class SkipScaling:
    """Hooks on one model; a context manager and a ``remove()``. One scaling per model at a time."""

    def __init__(self, model: nn.Module, points: Sequence[SkipPoint], sigma_of: SigmaOf,
                 rhos: Callable[[torch.Tensor], Sequence[Rho]]):
        if model in _ACTIVE:
            raise UserError("coefficients are already applied to this model; remove them first")
        self.model, self.points, self._rhos = model, list(points), rhos
        self._sigma: torch.Tensor | None = None
        self._handles = [model.register_forward_pre_hook(self._capture(sigma_of), with_kwargs=True)]
        by_module: dict[int, list[SkipPoint]] = {}
        for point in self.points:
            by_module.setdefault(id(point.module), []).append(point)
        for group in by_module.values():
            self._handles.append(group[0].module.register_forward_pre_hook(self._scale(group), with_kwargs=True))
        _ACTIVE[model] = self

    def _capture(self, sigma_of: SigmaOf):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._sigma = sigma_of(args, kwargs)

        return hook

    def _scale(self, group: list[SkipPoint]):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            first = group[0].skip_of(args, kwargs)
            sigma = self._sigma.to(first.device).expand(first.shape[0])
            rhos = self._rhos(sigma)
            for point in group:
                args, kwargs = point.scale(args, kwargs, rhos[point.index])
            return args, kwargs

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        _ACTIVE.pop(self.model, None)

    def __enter__(self) -> SkipScaling:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
