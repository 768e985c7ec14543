"""Scoped forward hooks that scale a model's skip tensors, for any architecture.

A model family says where its skips are (``points``: a whole argument, one tensor of a tuple argument, or
a channel slice of a concatenated input) and how to read sigma from the denoiser's call; ``SkipScaling``
installs one pre-hook per consuming module and takes every hook off again on ``remove()`` or on leaving
``with``, also on error. The hooks know nothing of methods: they scale by whatever rho a callable gives.
"""

from skipsearch.hooks.points import ArgumentSkip, ChannelSlice, SkipPoint, TupleSkip
from skipsearch.hooks.scaling import SkipScaling, active_on

__all__ = ["ArgumentSkip", "ChannelSlice", "SkipPoint", "SkipScaling", "TupleSkip", "active_on"]
