"""Where a skip tensor enters the module that consumes it: three kinds cover the UNets skipsearch meets.

- ``ArgumentSkip``: the skip is an argument of its own (the embedded UNet's decoder blocks);
- ``TupleSkip``: the skip is one tensor of a tuple argument (diffusers' ``res_hidden_states_tuple``);
- ``ChannelSlice``: the skip was concatenated into the input inside ``forward`` (NVlabs EDM's
  ``cat([x, skips.pop()])``), so its channels are a slice of the consuming block's input.

An argument is found by keyword when the call passes it so, else by position: diffusers passes the same
tuple positionally in one model and by keyword in another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

Rho = float | torch.Tensor  # a number, or one value per sample shaped (B, 1, 1, 1)


@dataclass(frozen=True, kw_only=True)
class SkipPoint:
    """One skip: its depth (``index`` 0 = outermost, ``level`` 0 = highest resolution), the consuming module
    and its path in the model, and which argument of that module's call carries the skip."""

    index: int
    level: int
    module: nn.Module = field(compare=False, repr=False)
    path: str
    position: int
    keyword: str | None = None

    def _get(self, args: tuple, kwargs: dict):
        if self.keyword is not None and self.keyword in kwargs:
            return kwargs[self.keyword]
        return args[self.position]

    def _put(self, args: tuple, kwargs: dict, value) -> tuple[tuple, dict]:
        if self.keyword is not None and self.keyword in kwargs:
            return args, {**kwargs, self.keyword: value}
        return args[: self.position] + (value,) + args[self.position + 1 :], kwargs

    def skip_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The skip tensor (for a slice, the whole input it is part of: shapes and devices agree)."""
        return self._get(args, kwargs)

    def scale(self, args: tuple, kwargs: dict, rho: Rho) -> tuple[tuple, dict]:
        raise NotImplementedError


def _like(rho: Rho, x: torch.Tensor) -> Rho:
    """A per-sample rho on the skip's device and in its dtype (a number stays a number)."""
    return rho.to(device=x.device, dtype=x.dtype) if isinstance(rho, torch.Tensor) else rho


def scaled(skip: torch.Tensor, rho: Rho) -> torch.Tensor:
    return skip * _like(rho, skip)


@dataclass(frozen=True, kw_only=True)
class ArgumentSkip(SkipPoint):
    """The whole argument is the skip."""

    def scale(self, args: tuple, kwargs: dict, rho: Rho) -> tuple[tuple, dict]:
        return self._put(args, kwargs, scaled(self._get(args, kwargs), rho))


@dataclass(frozen=True, kw_only=True)
class TupleSkip(SkipPoint):
    """Element ``element`` of a tuple argument (negative counts from the end, as blocks pop from it)."""

    element: int

    def skip_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        return self._get(args, kwargs)[self.element]

    def scale(self, args: tuple, kwargs: dict, rho: Rho) -> tuple[tuple, dict]:
        skips = list(self._get(args, kwargs))
        skips[self.element] = scaled(skips[self.element], rho)
        return self._put(args, kwargs, tuple(skips))


@dataclass(frozen=True, kw_only=True)
class ChannelSlice(SkipPoint):
    """Channels [start, stop) of a concatenated input are the skip. Scaled in place where autograd allows
    (the input is a fresh concatenation, and a second one costs time on every call), else on a copy."""

    start: int
    stop: int

    def scale(self, args: tuple, kwargs: dict, rho: Rho) -> tuple[tuple, dict]:
        x = self._get(args, kwargs)
        rho = _like(rho, x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            x[:, self.start : self.stop].mul_(rho)
            return args, kwargs
        parts = (x[:, : self.start], x[:, self.start : self.stop] * rho, x[:, self.stop :])
        return self._put(args, kwargs, torch.cat(parts, dim=1))
