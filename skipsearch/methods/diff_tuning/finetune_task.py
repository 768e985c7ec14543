"""A Diff-Tuning spec -> the ``FinetuneTask`` a search trial or a held-out retraining runs."""

from __future__ import annotations

from skipsearch.methods.diff_tuning.diff_spec import DiffTuningSpec
from skipsearch.methods.diff_tuning.finetune_trial import FinetuneTask, class_plan
from skipsearch.methods.sampled import eval_task
from skipsearch.models import model_info


def finetune_task(spec: DiffTuningSpec, *, n: int, seed_start: int, train_seed: int,
                  eval_steps: tuple[int, ...] = (), heldout: bool = False) -> FinetuneTask:
    """Scored on ``n`` samples from ``seed_start`` against both references; trained with ``train_seed``.
    ``heldout``: a held-out retraining (``eval_task``'s)."""
    f = spec.finetune
    target_classes, source_classes = class_plan(model_info(spec.model), f.data)
    return FinetuneTask(
        target=eval_task(spec, n=n, seed_start=seed_start, classes=target_classes, heldout=heldout),
        source=eval_task(spec, n=n, seed_start=seed_start, dataset=f.source_reference, classes=source_classes),
        data=f.data, n_images=f.n_images, data_seed=f.data_seed, train_batch=f.batch_size, bank_size=f.bank_size,
        bank_seed=f.bank_seed, train_seed=train_seed, eval_steps=eval_steps)
