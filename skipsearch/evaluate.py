"""Sample and score: a model as it stands (with whatever a method applied to it) in, FID/KID out.

The one code path for in-process and Ray trials, for held-out confirmation and for ``verify``. A worker
loads the model, the extractor and the reference statistics once (``evaluator``). Each call samples with
fixed seeds and scores FID/KID; the method around it applies and removes its coefficients. With a ladder of
sample counts (multi-fidelity), the images of rung j are reused by rung j+1: seeds are drawn in order,
and chunk boundaries depend only on the ladder and the batch size, so a rung's FID is bit-identical
wherever and however it is computed. One ladder samples K >= 1 trials together (``Evaluator.trials``: K trials
in one network batch, ``skipsearch.batched`` says why); a lone trial, held-out confirmation and ``verify`` are its
K = 1 case (``Evaluator.ladder``), so features, the report, previews, shared trajectories and timings are
computed in one place. FID and KID come from the metric registry (``metrics.registry``), and so
does every entry of the spec's ``metric.report``, computed on the same images in its own extractor (loaded once
per worker, ``feature_space``), its features kept along the ladder like the objective's.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import weakref
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from skipsearch import data
from skipsearch.batch_layout import BatchLayout
from skipsearch.data import to_uint8
from skipsearch.diffusion.generation import SamplerConfig, check_sampler, generate, non_finite, sample_seeds
from skipsearch.diffusion.trajectories import Sharing
from skipsearch.errors import SampleError, TrialError, TrialTimeout, UserError
from skipsearch.previews import grid_png
from skipsearch.progress import Progress
from skipsearch.results import Measurement, Score
from skipsearch.rungs import alone
from skipsearch.metrics import FeatureExtractor, Reference, reference
from skipsearch.metrics.registry import OBJECTIVE, metric
from skipsearch.models import LoadedModel, ModelSection, as_section, load_model
from skipsearch.timing import Stopwatch


# A trial's own failures, recorded as FAIL with their text and never retried: skipsearch's TrialError
# (non-finite samples, a diverged fine-tuning run, a timeout) and running out of GPU memory. Any other
# exception is a bug and stops the run (errors.py); a lost Ray worker is the machine's fault and is retried.
TRIAL_ERRORS = (TrialError, torch.cuda.OutOfMemoryError)

# What a ladder yields at each rung: every trial still running, with its score or its own failure.
RungResults = dict[int, Score | TrialError]


def failure_reason(err: BaseException) -> str:
    """The FAIL reason of a trial error: a timeout says "timeout: ..." itself, others lead with their type."""
    return str(err) if isinstance(err, TrialTimeout) else f"{type(err).__name__}: {err}"


@dataclass(frozen=True, kw_only=True)
class EvalTask:
    """Everything but the coefficients that determines a trial's numbers."""

    model: ModelSection
    sampler: SamplerConfig
    extractor: str
    dataset: str
    n: int
    seed_start: int
    batch_size: int = 500
    kid_subset_size: int = 100
    device: str = "cpu"
    rungs: tuple[int, ...] = ()  # smaller sample counts reported before n (multi-fidelity)
    classes: tuple[int, ...] = ()  # class-conditional sampling: seed s draws label classes[s % len(classes)]
    # the spec's ``metric.report``: (metric, extractor) pairs computed beside the objective on the same images
    report: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", as_section(self.model))  # a plain name: a shipped model

    def labels(self, seeds: range, default: tuple[int, ...] = ()) -> list[int] | None:
        """Seed s samples condition classes[s % len(classes)]: the task's classes, else the model's default
        conditions (a text model's prompts), else none (unconditional)."""
        classes = self.classes or default
        return [classes[s % len(classes)] for s in seeds] if classes else None

    @property
    def ladder(self) -> tuple[int, ...]:
        return tuple(sorted({*self.rungs, self.n}))



@dataclass(kw_only=True)
class Evaluator:
    loaded: LoadedModel
    extractor: FeatureExtractor
    reference: Reference
    device: torch.device

    def trials(self, task: EvalTask, layout: BatchLayout, progress: bool = False,
               shares: Sequence[Sharing | None] | None = None) -> Generator[RungResults, set[int] | None, None]:
        """The one ladder: the trials of ``layout`` (K >= 1; their coefficients are on the model, batched hooks
        reading the layout) sampled together, one result per trial still running at each rung. Send back the
        trials to stop (pruned); a trial whose samples are not finite or diverged fails alone and the others go
        on. A rung scores every image of the trial so far, in every space the task reports in. A trial's wall
        time is its share of the batch's. ``shares``: per trial, the steps it shares with the baseline's
        trajectory (``skipsearch.diffusion.trajectories``), or None."""
        start, count = time.perf_counter(), len(layout.alive)
        check_sampler(self.loaded.denoiser, task.sampler)
        own = {k: Stopwatch() for k in layout.alive}  # per trial: features and distance
        network: dict[int, float] = dict.fromkeys(layout.alive, 0.0)  # per trial: its share of the shared calls
        feats: dict[int, dict[str, list[torch.Tensor]]] = {k: {} for k in layout.alive}  # per trial, per extractor
        previews: dict[int, str] = {}
        done = 0
        for n in task.ladder:
            seeds = range(task.seed_start + done, task.seed_start + n)
            images, failed = self._sample_rung(task, layout, seeds, network, progress, shares)
            results: RungResults = dict(failed)
            for k in layout.alive:
                try:
                    batch = torch.cat(images[k])
                    check_images(batch)
                except SampleError as err:
                    results[k] = err
                    continue
                for label, part in self.features(batch, task, own[k]).items():
                    feats[k].setdefault(label, []).append(part)
                if k not in previews:
                    previews[k] = grid_png(batch)
                spaces = {label: torch.cat(parts) for label, parts in feats[k].items()}
                score = self.score(spaces.pop(self.extractor.name), task, n, own[k], start, previews[k], others=spaces)
                saved = 0 if shares is None or shares[k] is None else shares[k].saved
                results[k] = dataclasses.replace(score, wall_s=(time.perf_counter() - start) / count,
                                                 timings={**score.timings, "network": network[k]},
                                                 evaluations_saved=saved)
            done = n
            stopped = yield results
            layout.drop({k for k, r in results.items() if not isinstance(r, Score)} | set(stopped or ()))
            if not layout.alive:
                return

    def ladder(self, task: EvalTask, progress: bool = False, share: Sharing | None = None) -> Iterator[Score]:
        """One trial's ladder (``trials`` with K = 1), sampling the model as it is now; its failure is raised.
        ``share``: its first steps are the baseline's."""
        return alone(self.trials(task, BatchLayout(alive=[0]), progress, None if share is None else [share]))

    def __call__(self, task: EvalTask, progress: bool = False, share: Sharing | None = None) -> Score:
        *_, last = self.ladder(task, progress, share)
        return last

    def _sample_rung(self, task: EvalTask, layout: BatchLayout, seeds: range, network: dict[int, float],
                     progress: bool, shares: Sequence[Sharing | None] | None = None,
                     ) -> tuple[dict[int, list[torch.Tensor]], dict[int, TrialError]]:
        """One rung's new samples for every trial still running, chunk by chunk (the chunks each trial would
        sample alone), all trials in each network batch. Adds each trial's share of the network time to
        ``network``; returns the images and the trials that failed. With ``shares``, a batch starts from the
        baseline's cached state where its earliest trial's window opens."""
        images: dict[int, list[torch.Tensor]] = {k: [] for k in layout.alive}
        failed: dict[int, TrialError] = {}
        shared: list[tuple[Stopwatch, list[int]]] = []  # read after the rung: reading waits for the device
        info = self.loaded.info
        with Progress(len(seeds) * len(layout.alive), "sampling", "samples", enabled=progress, leave=False) as bar:
            for offset in range(0, len(seeds), task.batch_size):
                if not layout.alive:
                    break
                chunk = seeds[offset : offset + task.batch_size]
                layout.per_trial, live = len(chunk), list(layout.alive)
                watch = Stopwatch()
                shared.append((watch, live))
                plan = _batch_sharing(shares, live)
                x = sample_seeds(self.loaded.denoiser, chunk, info.shape, task.sampler, device=self.device,
                                 labels=task.labels(chunk, info.conditions), copies=len(live),
                                 wrap=functools.partial(watch.timed, key="network", device=self.device), share=plan)
                if plan is not None:
                    for k in live:
                        shares[k].saved += plan.saved // len(live)
                for c, k in enumerate(live):
                    part = x[c * len(chunk) : (c + 1) * len(chunk)]
                    if not torch.isfinite(part).all():
                        failed[k] = SampleError(non_finite(offset, len(part)))
                        continue
                    images[k].append(to_uint8(part).cpu())
                layout.drop(set(failed))
                bar.update(len(x))
        for watch, live in shared:
            for k in live:
                network[k] += watch.seconds.get("network", 0.0) / len(live)
        return images, failed

    def sample(self, task: EvalTask, seeds: range, watch: Stopwatch, progress: bool = False,
               share: Sharing | None = None) -> torch.Tensor:
        """Images for the seeds from the model as it is now (with whatever coefficients are applied)."""
        info = self.loaded.info
        images = generate(self.loaded.denoiser, seeds, info.shape, task.sampler, batch_size=task.batch_size,
                          device=self.device, progress=progress, labels=task.labels(seeds, info.conditions),
                          wrap=lambda f: watch.timed(f, "network", self.device), share=share)
        check_images(images)
        return images

    def features(self, images: torch.Tensor, task: EvalTask, watch: Stopwatch) -> dict[str, torch.Tensor]:
        """The images' features in the objective's extractor (timed as "features") and in every other extractor
        the task reports in (timed as "report"), by extractor label."""
        with watch.measure("features", self.device):
            out = {self.extractor.name: self.extractor(images, batch_size=task.batch_size)}
        for label in self.report_spaces(task):
            with watch.measure("report", self.device):
                out[label] = self.space(label, task.dataset).extractor(images, batch_size=task.batch_size)
        return out

    def report_spaces(self, task: EvalTask) -> tuple[str, ...]:
        """The extractors the task reports in besides the objective's, in the spec's order."""
        return tuple(dict.fromkeys(label for _, label in task.report if label != self.extractor.name))

    def space(self, label: str, dataset: str) -> FeatureSpace:
        """An extractor and the reference statistics of ``dataset`` in it: the objective's own, or another one
        loaded once per worker (``feature_space``)."""
        if label == self.extractor.name:
            return FeatureSpace(extractor=self.extractor, reference=self.reference)
        return feature_space(label, dataset, self.loaded.info.resolution, str(self.device))

    def score(self, feats: torch.Tensor, task: EvalTask, n: int, watch: Stopwatch, start: float,
              preview: str | None = None, evaluations_saved: int = 0,
              others: Mapping[str, torch.Tensor] | None = None) -> Score:
        """FID and KID of ``feats`` (the objective's extractor), through the metric registry, and the task's
        report: its entries in the objective's space from ``feats``, the others from ``others`` (by label)."""
        ref = self.reference
        with watch.measure("distance", self.device):
            values: dict[str, float] = {}
            for objective in OBJECTIVE:  # fid, kid and kid_std
                values |= objective(feats, ref.stats, ref.features, task.kid_subset_size)
        measurements = self.report(task, {self.extractor.name: feats, **(others or {})}, watch)
        info = self.loaded.info
        return Score(fid=values["fid"], kid=values["kid"], kid_std=values["kid_std"], n=n,
                     seed_start=task.seed_start, nfe=task.sampler.nfe, extractor=self.extractor.name,
                     ref_hash=ref.key, model_id=info.model_id, model_hash=info.weights_hash,
                     wall_s=time.perf_counter() - start, timings=dict(watch.seconds), preview=preview,
                     evaluations_saved=evaluations_saved, measurements=measurements)

    def report(self, task: EvalTask, feats: Mapping[str, torch.Tensor], watch: Stopwatch) -> tuple[Measurement, ...]:
        """Every (metric, extractor) of the task's report on these features, one measurement per number."""
        out: list[Measurement] = []
        with watch.measure("report", self.device):
            for name, label in task.report:
                ref = self.space(label, task.dataset).reference
                values = metric(name)(feats[label], ref.stats, ref.features, task.kid_subset_size)
                out += [Measurement(metric=key, extractor=label, value=value) for key, value in values.items()]
        return tuple(out)


def _batch_sharing(shares: Sequence[Sharing | None] | None, live: list[int]) -> Sharing | None:
    """The shared steps of one batch: as many as its earliest-opening trial has (``sample_seeds`` caches no state
    from a batch of several trials)."""
    if shares is None or any(shares[k] is None for k in live):
        return None
    return Sharing(steps=min(shares[k].steps for k in live), cache=shares[live[0]].cache)


@dataclass(frozen=True, kw_only=True)
class FeatureSpace:
    """An extractor with a reference's statistics in its space."""

    extractor: FeatureExtractor
    reference: Reference


@functools.lru_cache(maxsize=8)
def feature_space(label: str, dataset: str, resolution: int, device: str) -> FeatureSpace:
    """A report's extractor and its reference statistics (cached on disk by content), once per worker: a
    study reports in a few spaces, and every score of the worker reads the same ones."""
    extractor = FeatureExtractor(label, device=device)
    ref = reference(data.load(dataset, resolution=resolution), extractor).to(device)
    return FeatureSpace(extractor=extractor, reference=ref)


def check_images(images: torch.Tensor) -> None:
    flat = images.flatten(1)
    if (flat.max(dim=1).values == flat.min(dim=1).values).float().mean() > 0.5:
        raise SampleError("more than half of the sampled images are a single flat value (diverged sampler?)")


def resolve_device(device: str) -> str:
    """'auto' means CUDA where a device is visible (as Ray arranges per trial), else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for, but no CUDA device is visible (use cpu or auto)")
    return device


def build_evaluator(model: str | ModelSection, extractor: str, dataset: str, device: str = "cpu",
                    loaded: LoadedModel | None = None) -> Evaluator:
    """The model (a fresh copy unless ``loaded`` is given) with its extractor and reference; ``evaluator`` caches
    one per worker, all of them on the worker's one copy of the model (``loaded_on``)."""
    dev = torch.device(resolve_device(device))
    if loaded is None:
        loaded = load_model(as_section(model))
        loaded.denoiser.to(dev)
    feats = FeatureExtractor(extractor, device=str(dev))
    ref = reference(data.load(dataset, resolution=loaded.info.resolution), feats).to(dev)
    return Evaluator(loaded=loaded, extractor=feats, reference=ref, device=dev)


# The model copies the cached evaluators hold, by (model, device); an entry lives as long as an evaluator holds it
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def loaded_on(model: str | ModelSection, device: str) -> LoadedModel:
    """This process's one copy of a model on a device, which every cached evaluator of it shares: the second
    opinion scores the same network in another feature space (and Diff-Tuning's source FID in another
    reference), and a copy per extractor held a large UNet twice on the GPU for the rest of the run. The copy is
    kept as long as some evaluator holds it (a cache of its own could evict it while an evaluator still held
    it, and the next evaluator would load a second). Sharing is safe because whatever changes the network is
    scoped and undone on exit (hooks, ``apply``, loaded fine-tuned weights), and Diff-Tuning trains a deep copy
    of its own."""
    key = (model, device)
    loaded = _LOADED.get(key)
    if loaded is None:
        loaded = load_model(as_section(model))
        loaded.denoiser.to(torch.device(device))
        _LOADED[key] = loaded
    return loaded


def _cached_evaluator(model: str | ModelSection, extractor: str, dataset: str, device: str = "cpu") -> Evaluator:
    return build_evaluator(model, extractor, dataset, device, loaded=loaded_on(model, resolve_device(device)))


evaluator = functools.lru_cache(maxsize=4)(_cached_evaluator)


def evaluator_for(task: EvalTask) -> Evaluator:
    """This process's cached evaluator for the task's model, extractor, reference and device."""
    return evaluator(task.model, task.extractor, task.dataset, task.device)
