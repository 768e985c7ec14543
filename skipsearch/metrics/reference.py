"""Reference features and their FID statistics, cached on disk by content.

torch-fidelity's own cache keys by input name only, so skipsearch keys its cache by the reference pixels'
content hash, the extractor (name and weights) and the feature layer: a changed data set or extractor
never reuses stale statistics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from skipsearch.data import content_hash
from skipsearch.files import cache_dir
from skipsearch.metrics.cache import cached_array, write_cached_array
from skipsearch.metrics.distance import statistics
from skipsearch.metrics.features import FeatureExtractor, extractor_fingerprint


@dataclass(frozen=True)
class Reference:
    """Reference features and their FID statistics, with the hash that names them."""

    key: str
    features: torch.Tensor
    stats: dict[str, np.ndarray]


def reference(images: torch.Tensor, extractor: FeatureExtractor, *, cache: bool = True) -> Reference:
    """Features of the reference images, from the disk cache when the same pixels were seen before."""
    fingerprint = extractor_fingerprint(extractor.name, getattr(extractor, "weights", None))
    raw = f"{content_hash(images)}|{fingerprint}|{extractor.feature}"
    key = hashlib.sha256(raw.encode()).hexdigest()[:16]
    path = cache_dir() / f"ref-{extractor.name}-{key}.npz"
    feats = cached_array(path, "features") if cache else None
    if feats is not None and (feats.ndim != 2 or len(feats) != len(images) or feats.dtype != torch.float64):
        feats = None  # not what this cache entry must hold: recompute it
    if feats is None:
        feats = extractor(images, progress=True)
        if cache:
            write_cached_array(path, "features", feats)
    return Reference(key, feats, statistics(feats))


