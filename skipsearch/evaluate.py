"""evaluate(): coefficients in, numbers out. The one code path for in-process and distributed trials.

A worker loads the model, the extractor and the reference statistics once (``evaluator``), then each
call applies the coefficients in a scoped way, samples with fixed seeds and scores FID/KID.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field

import torch

from skipsearch import data
from skipsearch.adapters import apply_coefficients
from skipsearch.generate import SamplerConfig, generate
from skipsearch.metrics import FeatureExtractor, Reference, fid_from_stats, kid, reference, statistics
from skipsearch.models import LoadedModel, load_model
from skipsearch.skip import _Schedule
from skipsearch.timing import Stopwatch


class SampleError(RuntimeError):
    """The sampled images are unusable (NaN, or all one value): the trial fails with this reason."""


@dataclass(frozen=True)
class EvalTask:
    """Everything but the coefficients that determines a trial's numbers."""

    model: str
    sampler: SamplerConfig
    extractor: str
    dataset: str
    n: int
    seed_start: int
    batch_size: int = 500
    kid_subset_size: int = 100
    device: str = "cpu"

    @property
    def seeds(self) -> range:
        return range(self.seed_start, self.seed_start + self.n)


@dataclass(frozen=True)
class EvalResult:
    fid: float
    kid: float
    kid_std: float
    n: int
    seed_start: int
    nfe: int
    extractor: str
    ref_hash: str
    model_id: str
    model_hash: str
    wall_s: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evaluator:
    loaded: LoadedModel
    extractor: FeatureExtractor
    reference: Reference
    device: torch.device

    def __call__(self, task: EvalTask, coefficients: _Schedule, progress: bool = False) -> EvalResult:
        start, watch = time.perf_counter(), Stopwatch()
        with apply_coefficients(self.loaded.denoiser, coefficients):
            images = self.sample(task, watch, progress)
        return self.score(images, task, watch, start)

    def sample(self, task: EvalTask, watch: Stopwatch, progress: bool = False) -> torch.Tensor:
        """Images for the task's seeds from the model as it is now (with whatever coefficients are applied)."""
        info = self.loaded.info
        denoiser = watch.timed(self.loaded.denoiser, "network", self.device)
        images = generate(denoiser, task.seeds, (info.img_channels, info.resolution, info.resolution),
                          task.sampler, batch_size=task.batch_size, device=self.device, progress=progress)
        check_images(images)
        return images

    def score(self, images: torch.Tensor, task: EvalTask, watch: Stopwatch, start: float) -> EvalResult:
        with watch.measure("features", self.device):
            feats = self.extractor(images, batch_size=task.batch_size)
        fid = fid_from_stats(statistics(feats), self.reference.stats)
        kid_mean, kid_std = kid(feats, self.reference.features, task.kid_subset_size)
        info = self.loaded.info
        return EvalResult(fid, kid_mean, kid_std, task.n, task.seed_start, task.sampler.nfe, self.extractor.name,
                          self.reference.key, info.model_id, info.weights_hash, time.perf_counter() - start,
                          dict(watch.seconds))


def check_images(images: torch.Tensor) -> None:
    flat = images.flatten(1)
    if (flat.max(dim=1).values == flat.min(dim=1).values).float().mean() > 0.5:
        raise SampleError("more than half of the sampled images are a single flat value (diverged sampler?)")


def build_evaluator(model: str, extractor: str, dataset: str, device: str = "cpu") -> Evaluator:
    """A fresh model copy with its extractor and reference; ``evaluator`` caches one per worker."""
    dev = torch.device(device)
    loaded = load_model(model)
    loaded.denoiser.to(dev)
    feats = FeatureExtractor(extractor, device=device)
    ref = reference(data.load(dataset, resolution=loaded.info.resolution), feats)
    return Evaluator(loaded, feats, ref, dev)


evaluator = functools.lru_cache(maxsize=4)(build_evaluator)


def evaluate(task: EvalTask, coefficients: _Schedule, progress: bool = False) -> EvalResult:
    return evaluator(task.model, task.extractor, task.dataset, task.device)(task, coefficients, progress)
