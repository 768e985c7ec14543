"""What a metric is: a name, the numbers it gives, what of the reference it reads, and a function of features.

A metric is a plain function of features: the samples' features in one extractor's space, and what it needs of
the reference in that same space (its statistics, its features, or both). ``Inputs`` carries only what the
metric declared in ``uses``, so a metric that reads something it did not declare fails at once instead of
quietly depending on it. ``skipsearch.metrics.registry`` lists the metrics by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from skipsearch.metrics.distance import Statistics

Part = Literal["stats", "features"]  # what of the reference a metric reads


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """What a metric reads, all in one feature space: the samples' features (N, d) float64, and of the
    reference only what the metric ``uses`` (the rest is None)."""

    samples: torch.Tensor
    stats: Statistics | None = None  # the reference's mean and covariance (with sqrt_sigma)
    reference: torch.Tensor | None = None  # the reference's features (M, d) float64
    kid_subset_size: int = 100


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A metric: its name in specs, the names of the numbers it gives (stored as measurements, shown as
    ``value@extractor``), what of the reference it reads, and the function."""

    name: str
    values: tuple[str, ...]
    uses: frozenset[Part]
    compute: Callable[[Inputs], dict[str, float]]

    def __call__(self, samples: torch.Tensor, stats: Statistics, reference: torch.Tensor,
                 kid_subset_size: int = 100) -> dict[str, float]:
        """The metric's numbers from the inputs it declared (and nothing else), checked to be exactly the ones
        it declares."""
        inputs = Inputs(samples=samples, stats=stats if "stats" in self.uses else None,
                        reference=reference if "features" in self.uses else None, kid_subset_size=kid_subset_size)
        out = self.compute(inputs)
        if tuple(out) != self.values:
            raise RuntimeError(f"metric {self.name!r} gave {tuple(out)}, it declares {self.values}")
        return out
