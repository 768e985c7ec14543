"""``SkipScaling``: pre-hooks that multiply each skip point by its rho, on one model, removable as a unit.

The network's own call (the family's hook root) is hooked first: it reads sigma (per sample) and computes
every point's rho once for that call. Then each module that consumes skips gets one pre-hook scaling all of
its points with the rhos of the current call. ``rhos(sigma)``, sigma per sample (shape (B,)), gives one rho
per point, in the points' order; plain numbers where rho is the same for every call, so no tensor is made or
copied per call. Nothing stays on the model after ``remove()``.
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


def sigma_argument(position: int = 1) -> SigmaOf:
    """Reads an EDM-style denoiser's sigma: keyword ``sigma``, else positional argument ``position`` (D(x, sigma))."""

    def read(args: tuple, kwargs: dict) -> torch.Tensor:
        sigma = kwargs["sigma"] if "sigma" in kwargs else args[position]
        return torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)

    return read


def per_sample(sigma: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """sigma with one entry per sample of the call's batch (a view): samplers pass one sigma for the whole
    batch, and a rho that differs per sample (several trials in one batch) needs the batch's size."""
    if sigma.numel() != 1:
        return sigma
    for x in (*args, kwargs.get("sample"), kwargs.get("x")):
        if isinstance(x, torch.Tensor) and x.dim() >= 2:
            return sigma.reshape(1).expand(x.shape[0])
    return sigma


_ACTIVE: weakref.WeakKeyDictionary[nn.Module, SkipScaling] = weakref.WeakKeyDictionary()


def active_on(model: nn.Module) -> SkipScaling | None:
    """The scaling currently installed on ``model``, if any."""
    return _ACTIVE.get(model)


class SkipScaling:
    """Hooks on one model; a context manager and a ``remove()``. One scaling per model at a time."""

    def __init__(self, model: nn.Module, points: Sequence[SkipPoint], sigma_of: SigmaOf,
                 rhos: Callable[[torch.Tensor], Sequence[Rho]] | Sequence[Rho]):
        """``rhos``: one rho per point, or a function of sigma giving them (then every call of ``model`` reads
        its sigma first)."""
        if model in _ACTIVE:
            raise UserError("coefficients are already applied to this model; remove them first")
        self.model, self.points = model, list(points)
        self._handles = []
        if callable(rhos):
            self._rhos, self._now = rhos, ()
            self._handles.append(model.register_forward_pre_hook(self._capture(sigma_of), with_kwargs=True))
        else:
            self._now = list(rhos)
        by_module: dict[int, list[SkipPoint]] = {}
        for point in self.points:
            by_module.setdefault(id(point.module), []).append(point)
        for group in by_module.values():
            self._handles.append(group[0].module.register_forward_pre_hook(self._scale(group), with_kwargs=True))
        _ACTIVE[model] = self

    def _capture(self, sigma_of: SigmaOf):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._now = self._rhos(per_sample(sigma_of(args, kwargs), args, kwargs))

        return hook

    def _scale(self, group: list[SkipPoint]):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            for point in group:
                args, kwargs = point.scale(args, kwargs, self._now[point.index])
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
