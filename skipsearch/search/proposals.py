"""Optuna samplers seeded per trial, so no process ever replays another's proposals.

A sampler built once with ``seed=s`` starts the same random sequence in every process: a resumed study, or
a second driver on the same study, proposes the points it already evaluated (design.md measured 12 of 20
repeated trials after 5 resumes). ``PerTrialSeed`` instead gives each trial a fresh sampler seeded from
(spec seed, trial number). Trial numbers are unique within a study, whichever driver asks, so proposals
never repeat; and the same study history with the same seed gives the same proposal, so a search stays
reproducible. The model-based samplers (TPE, GP) read the whole study history from the storage on every
trial anyway, so nothing is lost by rebuilding them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

SAMPLERS: dict[str, Callable[[int], BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
}


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial ``number`` of a study searched with ``seed`` (NumPy takes at most 32 bits)."""
    return int.from_bytes(hashlib.sha256(f"skipsearch:{seed}:{number}".encode()).digest()[:4], "little")


class PerTrialSeed(BaseSampler):
    """Delegates every call about trial k to a sampler of its kind seeded with ``trial_seed(seed, k)``."""

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed
        self._make = SAMPLERS[kind]
        self._live: dict[int, BaseSampler] = {}

    def __str__(self) -> str:
        return f"PerTrialSeed({self.kind}, seed={self.seed})"

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self._live:
            self._live[trial.number] = self._make(trial_seed(self.seed, trial.number))
        return self._live[trial.number]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._live.pop(trial.number, None)  # a fresh sampler for every ask
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._live.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Seeds come from trial numbers; there is no process-wide sequence to reseed."""
