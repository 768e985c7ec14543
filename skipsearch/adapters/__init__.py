"""Model-family adapters: where a model's skips are, and a scoped hook that scales them.

``apply(model, coefficients)`` installs the hooks and returns a handle; leaving the ``with`` block (or
``handle.remove()``) takes them all off again, also on error, so nothing leaks into the next trial.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from skipsearch.errors import UserError
from skipsearch.skip import _Schedule


@dataclass(frozen=True)
class SkipPoint:
    """A module whose positional argument ``arg`` is skip number ``index`` (0 = outermost)."""

    index: int
    module: nn.Module
    arg: int


class Adapter(Protocol):
    name: str

    def matches(self, model: nn.Module) -> bool: ...

    def skip_points(self, model: nn.Module) -> list[SkipPoint]: ...

    def sigma_of(self, args: tuple, kwargs: dict) -> torch.Tensor: ...


from skipsearch.adapters.embedded import EmbeddedUNetAdapter  # noqa: E402

ADAPTERS: list[Adapter] = [EmbeddedUNetAdapter()]
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, Applied] = weakref.WeakKeyDictionary()


def adapter_for(model: nn.Module) -> Adapter:
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter
    names = ", ".join(a.name for a in ADAPTERS)
    raise UserError(f"no Skip-Tuning adapter for {type(model).__name__}; supported: {names}")


class Applied:
    """Hooks on one model; a context manager and a ``remove()``."""

    def __init__(self, model: nn.Module, coefficients: _Schedule):
        if model in _ACTIVE:
            raise UserError("coefficients are already applied to this model; remove them first")
        if not isinstance(coefficients, _Schedule):
            raise UserError(f"Skip-Tuning coefficients expected, got {type(coefficients).__name__}")
        self.model, self.coefficients = model, coefficients
        adapter = adapter_for(model)
        points = adapter.skip_points(model)
        coefficients.depth_profile(len(points))  # a schedule that does not fit raises before any hook is on
        self._sigma: torch.Tensor | None = None
        self._handles = [model.register_forward_pre_hook(self._capture(adapter), with_kwargs=True)]
        self._handles += [p.module.register_forward_pre_hook(self._scale(p, len(points))) for p in points]
        _ACTIVE[model] = self

    def _capture(self, adapter: Adapter):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._sigma = adapter.sigma_of(args, kwargs)

        return hook

    def _scale(self, point: SkipPoint, n_skips: int):
        def hook(module: nn.Module, args: tuple) -> tuple:
            skip = args[point.arg]
            sigma = self._sigma.to(skip.device).expand(skip.shape[0])
            rho = self.coefficients.rhos(n_skips, sigma)[point.index]
            if isinstance(rho, torch.Tensor):
                rho = rho.to(device=skip.device, dtype=skip.dtype)
            return args[: point.arg] + (skip * rho,) + args[point.arg + 1 :]

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        _ACTIVE.pop(self.model, None)

    def __enter__(self) -> Applied:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def apply_coefficients(model: nn.Module, coefficients: _Schedule) -> Applied:
    return Applied(model, coefficients)
