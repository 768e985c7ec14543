"""Evaluation tasks from a spec: what every method's trial and held-out evaluation score with."""

from __future__ import annotations

from skipsearch.evaluate import EvalTask
from skipsearch.spec import Spec


def eval_task(spec: Spec, *, n: int, seed_start: int, rungs: tuple[int, ...] = (), dataset: str | None = None,
              classes: tuple[int, ...] = ()) -> EvalTask:
    """The spec's model, sampler and metric at ``n`` samples from ``seed_start`` (against ``dataset``,
    by default the spec's reference)."""
    m = spec.metric
    return EvalTask(model=spec.model.name, sampler=spec.sampler.config(), extractor=m.extractor,
                    dataset=dataset or m.reference, n=n, seed_start=seed_start, batch_size=m.batch_size,
                    kid_subset_size=m.kid_subset_size, device=spec.device, rungs=rungs, classes=classes)


def heldout_seed_start(spec: Spec, seed_set: int) -> int:
    """The first seed of held-out seed set ``seed_set``: sets are disjoint, ``confirm.n`` seeds each."""
    return spec.confirm.seed + seed_set * spec.confirm.n
