"""Reference features and their FID statistics (with the covariance's square root), cached on disk by content.

torch-fidelity's own cache keys by input name only, so skipsearch keys its cache by the reference pixels'
content hash, the extractor (its label, which carries a non-fp32 precision, and its weights) and the feature
layer: a changed data set, extractor or precision never reuses stale statistics. The file is named after the
label too (``ref-inception-v3-compat@bf16-<key>.npz``); fp32's label is the plain name, as before precisions.
The entry holds the features, their mean and covariance and the covariance's square root, so that no trial
recomputes them (an entry written before the square root was kept is completed once).

Some features ship with the package (``skipsearch/weights/``, under the cache entry's own name, so under the
same content key): those of the README demo's second space (channels_last Inception) for its reference, the
1,797 digits at 16x16, which take 3.5 minutes on 2 CPU cores, most of a first demo. They are stored as float32,
which is what the extractor computes (it only widens to float64), so they are the features bit for bit;
anything else (other pixels, weights, layer or precision) has another key, finds no shipped file and is
computed. ``ship`` writes such a file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import torch

from skipsearch.data import content_hash
from skipsearch.files import atomic_write
from skipsearch.metrics.cache import cache_file, cached_arrays, write_cached_arrays
from skipsearch.metrics.distance import Statistics, statistics
from skipsearch.metrics.features import EXTRACTORS, FeatureExtractor, extractor_fingerprint, extractor_weights


@dataclass(frozen=True)
class Reference:
    """Reference features and their FID statistics, with the hash that names them."""

    key: str
    features: torch.Tensor  # (N, d) float64
    stats: Statistics  # with sqrt_sigma

    def to(self, device: torch.device | str) -> Reference:
        return Reference(self.key, self.features.to(device), self.stats.to(device))


KEYS = ("features", "mu", "sigma", "sqrt_sigma")
SHIPPED = resources.files("skipsearch.weights")  # where the package's own reference features lie


def reference_key(images: torch.Tensor, extractor: str, feature: str | None = None,
                  weights: str | Path | None = None) -> str:
    """The reference's content key (a trial's ``ref_hash``): its pixels, the extractor's label and weights and
    the feature layer. Computed without running the extractor, so a study can check, before any trial, that
    the reference it was stored with is still the one its spec names (``search.integrity``)."""
    if weights is None:
        weights = extractor_weights(extractor)
    fingerprint = extractor_fingerprint(extractor, weights)
    raw = f"{content_hash(images)}|{fingerprint}|{feature or EXTRACTORS[extractor]}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def reference(images: torch.Tensor, extractor: FeatureExtractor, *, cache: bool = True,
              shipped: Traversable | Path = SHIPPED) -> Reference:
    """Features and statistics of the reference images, from the disk cache when the same pixels were seen,
    else from the features shipped for them (``shipped``: the folder), else computed."""
    key = reference_key(images, extractor.name, extractor.feature, getattr(extractor, "weights", None))
    path = cache_file("ref", extractor.name, key)
    if cache and (entry := cached_arrays(path, KEYS)) is not None and _sound(entry, len(images)):
        stats = Statistics(mu=entry["mu"], sigma=entry["sigma"], n=len(images), sqrt_sigma=entry["sqrt_sigma"])
        return Reference(key, entry["features"], stats)
    feats = cached_arrays(path, ("features",)) if cache else None  # an older entry: features only
    if feats is None or not _sound(feats, len(images)):
        feats = shipped_features(shipped / path.name, len(images))
    feats = feats["features"] if feats is not None and _sound(feats, len(images)) else extractor(images, progress=True)
    stats = statistics(feats, with_sqrt=True)
    if cache:
        write_cached_arrays(path, {"features": feats, "mu": stats.mu, "sigma": stats.sigma,
                                   "sqrt_sigma": stats.sqrt_sigma})
    return Reference(key, feats, stats)


def _sound(entry: dict[str, torch.Tensor], n: int) -> bool:
    """What this cache entry must hold (else it is recomputed): float64 features of every image, and
    statistics of their dimension."""
    feats = entry["features"]
    if feats.ndim != 2 or len(feats) != n or feats.dtype != torch.float64:
        return False
    d = feats.shape[1]
    return all(entry[k].shape == ((d,) if k == "mu" else (d, d)) and entry[k].dtype == torch.float64
               for k in entry if k != "features")


def shipped_features(file: Traversable | Path, n: int) -> dict[str, torch.Tensor] | None:
    """The shipped float32 features of ``n`` images in ``file`` as the float64 the extractor returns; None when
    there is no such file, or it is unreadable or of another size (then they are computed). Never unpickled."""
    if not file.is_file():
        return None
    with resources.as_file(file) as path:
        entry = cached_arrays(path, ("features",))
    if entry is None or entry["features"].dtype != torch.float32:
        return None
    feats = {"features": entry["features"].to(torch.float64)}
    return feats if _sound(feats, n) else None


def ship(ref: Reference, extractor: str, folder: Path) -> Path:
    """Write a reference's features for the package to ship (``folder``: ``skipsearch/weights``), named as its
    cache entry. Refused unless float32 holds them exactly: a shipped file must give the features bit for bit."""
    narrow = ref.features.to(torch.float32)
    if not torch.equal(narrow.to(torch.float64), ref.features):
        raise ValueError("these features are not float32 values widened; shipping them as float32 would change them")
    target = folder / cache_file("ref", extractor, ref.key).name
    atomic_write(target, lambda f: np.savez_compressed(f, features=narrow.numpy()))
    return target
