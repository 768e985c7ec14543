"""FID and KID from torch-fidelity's own functions, with reference statistics cached by content hash.

Statistics are split from distance (as in edm's fid.py): features -> (mu, sigma) -> FID. torch-fidelity's
own cache keys by input name only, so skipsearch keys its cache by the reference pixels' content hash,
the extractor (name and weights) and the feature layer.

Two extractors: ``skipsearch-digits`` (the demo's own feature space) and ``inception-v3-compat``, the
standard FID Inception-v3 whose FIDs are comparable with papers'. Its weights are found offline as
skipsearch.inception describes. It resizes every image to 299x299 internally (TensorFlow-1.x bilinear),
so 32x32 images are upsampled as the standard FID code does for CIFAR-10. The two spaces' FIDs never compare.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.utils import create_feature_extractor
from tqdm.auto import tqdm

from skipsearch import deadline, safeload
from skipsearch import extractor as digits_extractor
from skipsearch import inception
from skipsearch.data import content_hash
from skipsearch.errors import UserError

EXTRACTORS = {
    digits_extractor.DIGITS_EXTRACTOR: digits_extractor.DIGITS_FEATURE,
    inception.INCEPTION_EXTRACTOR: inception.INCEPTION_FEATURE,
}


def cache_dir() -> Path:
    path = Path(os.environ.get("SKIPSEARCH_CACHE", Path.home() / ".cache" / "skipsearch"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_path(name: str, weights: str | Path | None = None) -> Path | None:
    """The weights file torch-fidelity loads for this extractor (None: the extractor finds its own)."""
    if name == inception.INCEPTION_EXTRACTOR:
        return inception.weights_path(cache_dir(), weights)
    if weights is not None:
        raise UserError(f"feature extractor {name!r} takes no weights file")
    return None


def extractor_fingerprint(name: str, weights: str | Path | None = None) -> str:
    """Name plus what defines its weights; two fingerprints that differ never share statistics."""
    if name == digits_extractor.DIGITS_EXTRACTOR:
        shipped = resources.files("skipsearch.weights") / digits_extractor.DIGITS_WEIGHTS
        return f"{name}:{hashlib.sha256(shipped.read_bytes()).hexdigest()[:16]}"
    if name == inception.INCEPTION_EXTRACTOR:
        resolved = Path(weights) if weights is not None else weights_path(name)
        return f"{name}:{inception.file_sha256(resolved)[:16]}"
    return f"{name}:torch-fidelity-{torch_fidelity.__version__}"


class FeatureExtractor:
    """A torch-fidelity extractor fed uint8 batches directly (its generator wrapper breaks on NumPy 2).

    Takes uint8 (N, C, H, W), C = 1 (expanded to 3) or 3, and returns float64 (N, D) features. ``weights``
    is a weights file for ``inception-v3-compat`` (see skipsearch.inception); ``self.weights`` is the
    resolved file that was loaded, and its hash is part of the reference cache key.
    """

    def __init__(self, name: str, feature: str | None = None, device: str = "cpu",
                 weights: str | Path | None = None):
        digits_extractor.register()
        if name not in EXTRACTORS:
            raise UserError(f"unknown feature extractor {name!r}; valid: {', '.join(sorted(EXTRACTORS))}")
        self.name, self.feature = name, feature or EXTRACTORS[name]
        self.weights = weights_path(name, weights)
        if self.weights is not None:
            inception.check_feature(self.weights, self.feature)
        kwargs = {} if self.weights is None else {"feature_extractor_weights_path": str(self.weights)}
        self.device = torch.device(device)
        with safeload.forced_weights_only():  # torch-fidelity loads the (already checked) file with pickle
            self.net = create_feature_extractor(name, [self.feature], cuda=False, verbose=False, **kwargs)
        self.net.to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 500, progress: bool = False) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError("feature extraction takes uint8 images")
        out = []
        steps = range(0, len(images), batch_size)
        for start in tqdm(steps, desc="features", disable=None if progress else True, leave=False):
            deadline.check()
            batch = images[start : start + batch_size].to(self.device)
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            out.append(self.net(batch)[0].to("cpu", torch.float64))
        return torch.cat(out)


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


def cached_array(path: Path, key: str) -> torch.Tensor | None:
    """An array from skipsearch's cache, or None when it is absent or unreadable (then it is recomputed).
    Never unpickled: ``np.load`` refuses object arrays."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return torch.from_numpy(archive[key])
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_cached_array(path: Path, key: str, array: torch.Tensor) -> None:
    """Atomically, under a per-process temporary name (Ray workers may build the same entry at once)."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **{key: array.numpy()})
    os.replace(tmp, path)


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
