"""FID and KID from torch-fidelity's own functions: features -> (mu, sigma) -> distance (as in edm's fid.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric


def statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    return fid_features_to_statistics(features.to(torch.float64))


def fid_from_stats(stats_1: dict[str, np.ndarray], stats_2: dict[str, np.ndarray]) -> float:
    return float(fid_statistics_to_metric(stats_1, stats_2, verbose=False)[KEY_METRIC_FID])


def kid(features_1: torch.Tensor, features_2: torch.Tensor, subset_size: int = 100,
        subsets: int = 100, seed: int = 2020) -> tuple[float, float]:
    """Unbiased KID (mean, std over subsets); the subset size is capped by the smaller set."""
    size = min(subset_size, len(features_1), len(features_2))
    out = kid_features_to_metric(features_1, features_2, kid_subsets=subsets, kid_subset_size=size,
                                 rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])
