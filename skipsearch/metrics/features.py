"""Feature extractors: torch-fidelity networks fed uint8 batches directly, by registered name.

Two extractors: ``skipsearch-digits`` (the demo's own feature space) and ``inception-v3-compat``, the
standard FID Inception-v3 whose FIDs are comparable with papers'. Its weights are found offline as
skipsearch.metrics.inception describes. It resizes every image to 299x299 internally (TensorFlow-1.x bilinear),
so 32x32 images are upsampled as the standard FID code does for CIFAR-10. The two spaces' FIDs never compare.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch_fidelity
from torch_fidelity.utils import create_feature_extractor

from skipsearch import deadline, safeload
from skipsearch.errors import UserError
from skipsearch.files import file_sha256
from skipsearch.metrics import digits as digits_extractor
from skipsearch.metrics import inception
from skipsearch.files import cache_dir
from skipsearch.progress import Progress

EXTRACTORS = {
    digits_extractor.DIGITS_EXTRACTOR: digits_extractor.DIGITS_FEATURE,
    inception.INCEPTION_EXTRACTOR: inception.INCEPTION_FEATURE,
}


def extractor_weights(name: str, weights: str | Path | None = None) -> Path | None:
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
        with resources.as_file(shipped) as path:
            return f"{name}:{file_sha256(path)[:16]}"
    if name == inception.INCEPTION_EXTRACTOR:
        resolved = Path(weights) if weights is not None else extractor_weights(name)
        return f"{name}:{file_sha256(resolved)[:16]}"
    return f"{name}:torch-fidelity-{torch_fidelity.__version__}"


class FeatureExtractor:
    """A torch-fidelity extractor fed uint8 batches directly (its generator wrapper breaks on NumPy 2).

    Takes uint8 (N, C, H, W), C = 1 (expanded to 3) or 3, and returns float64 (N, D) features. ``weights``
    is a weights file for ``inception-v3-compat`` (see skipsearch.metrics.inception); ``self.weights`` is the
    resolved file that was loaded, and its hash is part of the reference cache key.
    """

    def __init__(self, name: str, feature: str | None = None, device: str = "cpu",
                 weights: str | Path | None = None):
        digits_extractor.register()
        if name not in EXTRACTORS:
            raise UserError(f"unknown feature extractor {name!r}; valid: {', '.join(sorted(EXTRACTORS))}")
        self.name, self.feature = name, feature or EXTRACTORS[name]
        self.weights = extractor_weights(name, weights)
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
        with Progress(len(images), "features", "samples", enabled=progress, leave=False) as bar:
            for start in range(0, len(images), batch_size):
                deadline.check()
                batch = images[start : start + batch_size].to(self.device)
                if batch.shape[1] == 1:
                    batch = batch.expand(-1, 3, -1, -1)
                out.append(self.net(batch)[0].to("cpu", torch.float64))
                bar.update(len(batch))
        return torch.cat(out)


