"""A Diff-Tuning trial: fine-tune a copy of the pre-trained model, score it at the evaluation steps.

The pre-trained model, the extractor, both references and the knowledge bank are loaded once per
process and shared by every trial; each trial trains its own deep copy. Target FID (the new domain) is
measured at every evaluation step, so weak trials can be pruned; source FID (the pre-training domain:
how much was forgotten) at the last step. Sampling uses the same seeds in every trial.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from skipsearch import data
from skipsearch.evaluate import EvalTask, Evaluator, evaluator_for
from skipsearch.files import atomic_write, file_hash
from skipsearch.methods.diff_tuning.bank import knowledge_bank
from skipsearch.methods.diff_tuning.training import finetune
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights
from skipsearch.errors import UserError
from skipsearch.models import ModelInfo
from skipsearch.methods.diff_tuning.source_domain import SOURCE
from skipsearch.results import Extra, Rung
from skipsearch.timing import Stopwatch


@dataclass(frozen=True, kw_only=True)
class FinetuneTask:
    """Everything but the Diff-Tuning weights that determines a trial's numbers: how the fine-tuned model
    is scored (``target``, ``source``: the same samples, two references) and what it is trained on."""

    target: EvalTask  # the new domain's reference, sampling the new data's classes
    source: EvalTask  # the pre-training domain's reference (forgetting), sampling the model's own classes
    data: str
    n_images: int | None
    data_seed: int
    train_batch: int
    bank_size: int
    bank_seed: int
    train_seed: int
    eval_steps: tuple[int, ...] = ()


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


def save_weights(state: dict[str, torch.Tensor], path: Path) -> dict[str, Extra]:
    """A plain state dict (loadable with weights_only=True), written atomically; the trial's extras that find
    and check it again (``weights_path``, ``weights_hash``: the trials frame's columns of those names)."""
    tensors = {k: v.detach().cpu() for k, v in state.items()}
    atomic_write(path, lambda f: torch.save(tensors, f))
    return {"weights_path": str(path), "weights_hash": file_hash(path)}


def finetune_ladder(task: FinetuneTask, w: DiffTuningWeights, save_to: Path | None = None,
                    progress: bool = False) -> Iterator[Rung]:
    """One rung per evaluation step; the last step adds source FID and the saved weights."""
    start, watch = time.perf_counter(), Stopwatch()
    ev_t, ev_s = evaluator_for(task.target), evaluator_for(task.source)
    pre, dev = ev_t.loaded, ev_t.device
    bank = None
    if w.bank_count(task.train_batch) > 0:
        with watch.measure("bank", dev):
            t = task.target
            bank = knowledge_bank(pre, t.sampler, task.bank_size, task.bank_seed, t.batch_size, str(dev))
        bank = data.to_model_range(bank).to(dev)
    images, labels = downstream(task.data, task.n_images, task.data_seed, pre.info.resolution)
    new = data.to_model_range(images).to(dev)
    tuned = copy.deepcopy(pre)
    on_target = Evaluator(loaded=tuned, extractor=ev_t.extractor, reference=ev_t.reference, device=dev)
    on_source = Evaluator(loaded=tuned, extractor=ev_s.extractor, reference=ev_s.reference, device=dev)
    sampler = task.target.sampler
    steps = finetune(tuned.denoiser, new, bank, w, batch_size=task.train_batch,
                     sigma_range=(sampler.sigma_min, sampler.sigma_max), seed=task.train_seed,
                     report_at=task.eval_steps, new_labels=labels, progress=progress)
    while True:
        with watch.measure("train", dev):
            step = next(steps, None)
        if step is None:
            return
        final, references, extras = step == w.steps, {}, {}
        with watch.measure("evaluation", dev):
            score = on_target(task.target, progress)
            if final:
                references[SOURCE] = on_source(task.source, progress)
        if final and save_to is not None:
            extras = save_weights(tuned.denoiser.net.state_dict(), save_to)
        yield Rung(score=score, progress=step, final=final, step=step, references=references, extras=extras,
                   wall_s=time.perf_counter() - start, timings=dict(watch.seconds))
