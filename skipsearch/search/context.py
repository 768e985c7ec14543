"""A study as one driver holds it: the spec and its method, the model's facts, the database, Optuna's study
and this driver's membership."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from tqdm.auto import tqdm

from skipsearch.methods import Method
from skipsearch.models import ModelInfo
from skipsearch.search.coordination import Driver
from skipsearch.search.pictures import ProfilePlots
from skipsearch.spec import Spec
from skipsearch.storage import Store


@dataclass(kw_only=True)
class StudyContext:
    spec: Spec
    method: Method
    info: ModelInfo  # the model's facts (skips, resolution): no evaluator is built on the driver
    store: Store
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    driver: Driver
    echo: Callable[[str], None] = field(default=tqdm.write)
    artifacts: Any = None  # Optuna's artifact store for per-trial pictures (``storage.artifacts``)
    plots: ProfilePlots = field(default_factory=ProfilePlots)  # trials' profile plots, drawn while they run
    hashes: dict[str, str] = field(default_factory=dict)  # the files' hashes the study was stored with (integrity)

    @property
    def multi_objective(self) -> bool:
        return len(self.method.objectives(self.spec)) > 1

    def close(self) -> None:
        """This driver leaves the study (other drivers no longer wait for it)."""
        self.plots.close()
        self.driver.stop()
        self.store.close()
