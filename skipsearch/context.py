"""A study as one driver holds it: the spec, the database, Optuna's study and this driver's membership,
and the tasks (what a trial or a held-out evaluation computes) derived from the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from tqdm.auto import tqdm

from skipsearch.coordination import Driver
from skipsearch.evaluate import EvalTask
from skipsearch.spec import DiffTuningSpec, Spec
from skipsearch.storage import Store


@dataclass
class StudyContext:
    spec: Spec
    store: Store
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    driver: Driver
    n_skips: int
    echo: Callable[[str], None] = field(default=tqdm.write)

    def task(self, n: int, seed_start: int, rungs: tuple[int, ...] = ()) -> EvalTask:
        m = self.spec.metric
        return EvalTask(self.spec.model.name, self.spec.sampler.config(), m.extractor, m.reference, n, seed_start,
                        m.batch_size, m.kid_subset_size, self.spec.device, rungs)

    @property
    def search_task(self) -> EvalTask:
        return self.task(self.spec.metric.n, self.spec.metric.seed, tuple(self.spec.metric.rungs))

    @property
    def diff_tuning(self) -> bool:
        return isinstance(self.spec, DiffTuningSpec)

    @property
    def multi_objective(self) -> bool:
        return self.diff_tuning and self.spec.search.multi_objective

    def finetune_task(self, n: int, seed_start: int, train_seed: int, eval_steps: tuple[int, ...] = ()):
        from skipsearch.finetuning import FinetuneTask

        m, f = self.spec.metric, self.spec.finetune
        return FinetuneTask(self.spec.model.name, self.spec.sampler.config(), m.extractor, m.reference,
                            f.source_reference, n, seed_start, m.batch_size, m.kid_subset_size, self.spec.device,
                            f.data, f.n_images, f.data_seed, f.batch_size, f.bank_size, f.bank_seed, train_seed,
                            eval_steps)

    def weights_file(self, number: int) -> Path:
        """Absolute, so the database's reference holds from any working directory."""
        return (Path(self.spec.finetune.weights_dir) / self.spec.name / f"trial-{number:04d}.pt").resolve()

    def values(self, fid: float, source_fid: float | None) -> float | list[float]:
        """What Optuna is told: target FID, or (target FID, source FID) in a multi-objective study."""
        return [fid, source_fid] if self.multi_objective else fid

    @property
    def trial_task(self):
        """What a search trial runs: an EvalTask (Skip-Tuning) or a FinetuneTask (Diff-Tuning)."""
        if not self.diff_tuning:
            return self.search_task
        f = self.spec.finetune
        return self.finetune_task(self.spec.metric.n, self.spec.metric.seed, f.seed, f.eval_steps)

    def weights_path(self, number: int) -> Path | None:
        """Where trial ``number`` saves fine-tuned weights (Diff-Tuning only)."""
        return self.weights_file(number) if self.diff_tuning else None

    @property
    def trial_timeout_s(self) -> float | None:
        return self.spec.search.trial_timeout_s

    def close(self) -> None:
        """This driver leaves the study (other drivers no longer wait for it)."""
        self.driver.stop()
        self.store.close()
