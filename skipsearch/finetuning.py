"""A Diff-Tuning trial: fine-tune a copy of the pre-trained model, score it at the evaluation steps.

The pre-trained model, the extractor, both references and the knowledge bank are loaded once per
process and shared by every trial; each trial trains its own deep copy. Target FID (the new domain) is
measured at every evaluation step, so weak trials can be pruned; source FID (the pre-training domain:
how much was forgotten) at the last step. Sampling uses the same seeds in every trial.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from skipsearch import data
from skipsearch.difftuning import DiffTuningWeights, finetune, knowledge_bank
from skipsearch.errors import UserError
from skipsearch.evaluate import EvalTask, Evaluator, evaluator
from skipsearch.generate import SamplerConfig
from skipsearch.models import ModelInfo
from skipsearch.timing import Stopwatch


@dataclass(frozen=True)
class FinetuneTask:
    """Everything but the Diff-Tuning weights that determines a trial's numbers."""

    model: str
    sampler: SamplerConfig
    extractor: str
    target: str  # reference of the new domain (metric.reference)
    source: str  # reference of the pre-training domain
    n: int
    seed_start: int
    batch_size: int
    kid_subset_size: int
    device: str
    data: str
    n_images: int | None
    data_seed: int
    train_batch: int
    bank_size: int
    bank_seed: int
    train_seed: int
    eval_steps: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneTask:
        return cls(**{**d, "sampler": SamplerConfig(**d["sampler"]), "eval_steps": tuple(d["eval_steps"])})

    def eval_task(self, dataset: str, classes: tuple[int, ...] = ()) -> EvalTask:
        return EvalTask(self.model, self.sampler, self.extractor, dataset, self.n, self.seed_start,
                        self.batch_size, self.kid_subset_size, self.device, classes=classes)


def downstream(name: str, n_images: int | None, seed: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The new domain's training set: a seeded random subset of ``n_images`` (uint8), and its labels
    where the data set has them."""
    images, labels = data.load(name, resolution=resolution), data.load_labels(name)
    if n_images is None:
        return images, labels
    if n_images > len(images):
        raise UserError(f"finetune.n_images is {n_images}, but {name} has only {len(images)} images")
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n_images]
    return images[keep], None if labels is None else labels[keep]


def downstream_images(name: str, n_images: int | None, seed: int, resolution: int) -> torch.Tensor:
    return downstream(name, n_images, seed, resolution)[0]


def class_plan(info: ModelInfo, data_name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Labels to sample with for (target FID, source FID): a class-conditional model draws the new data's
    classes and its pre-training classes; an unconditional one (or unlabelled data) draws none."""
    if not info.num_classes:
        return (), ()
    labels = data.load_labels(data_name)
    return (() if labels is None else tuple(sorted(set(labels.tolist())))), tuple(info.classes)


def save_weights(state: dict[str, torch.Tensor], path: Path) -> str:
    """A plain state dict (loadable with weights_only=True), written atomically; returns its sha256 prefix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def finetune_ladder(task: FinetuneTask, w: DiffTuningWeights, save_to: Path | None = None,
                    progress: bool = False) -> Iterator[dict]:
    """One result per evaluation step (and the last step, which adds source FID and the saved weights)."""
    start, watch = time.perf_counter(), Stopwatch()
    ev_t = evaluator(task.model, task.extractor, task.target, task.device)
    ev_s = evaluator(task.model, task.extractor, task.source, task.device)
    pre, dev = ev_t.loaded, ev_t.device
    bank = None
    if w.bank_count(task.train_batch) > 0:
        with watch.measure("bank", dev):
            bank = knowledge_bank(pre, task.sampler, task.bank_size, task.bank_seed, task.batch_size, str(dev))
        bank = data.to_model_range(bank).to(dev)
    info = pre.info
    images, labels = downstream(task.data, task.n_images, task.data_seed, info.resolution)
    new = data.to_model_range(images).to(dev)
    target_classes, source_classes = class_plan(info, task.data)
    tuned = copy.deepcopy(pre)
    on_target = Evaluator(tuned, ev_t.extractor, ev_t.reference, dev)
    on_source = Evaluator(tuned, ev_s.extractor, ev_s.reference, dev)
    sigma_range = (task.sampler.sigma_min, task.sampler.sigma_max)
    steps = finetune(tuned.denoiser, new, bank, w, batch_size=task.train_batch, sigma_range=sigma_range,
                     seed=task.train_seed, report_at=task.eval_steps, new_labels=labels)
    while True:
        with watch.measure("train", dev):
            step = next(steps, None)
        if step is None:
            return
        with watch.measure("evaluation", dev):
            out = on_target(task.eval_task(task.target, target_classes), None, progress).to_dict()
            out |= {"step": step, "final": step == w.steps}
            if out["final"]:
                source = on_source(task.eval_task(task.source, source_classes), None, progress)
                out |= {"source_fid": source.fid, "source_kid": source.kid}
        if out["final"] and save_to is not None:
            digest = save_weights(tuned.denoiser.net.state_dict(), save_to)
            out |= {"weights_path": str(save_to), "weights_hash": digest}
        out["timings"] = dict(watch.seconds)  # bank, train, evaluation: cumulative seconds
        out["wall_s"] = time.perf_counter() - start
        yield out
