"""Diff-Tuning's search space: an Optuna trial's parameters -> the recipe, and plain fine-tuning's parameters.

Parameter names and their order are part of a study's history and never change. A range whose ends are
equal fixes that weight (it is not an Optuna parameter then). Optuna is not imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from skipsearch.methods.diff_tuning.diff_spec import DiffSearchSpec, DiffTuningSpec
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights

# parameter -> (range field, log scale, integer)
PARAMS = {"s": ("s_range", False, False), "s_prime": ("s_prime_range", False, False),
          "r": ("r_range", False, False), "lam": ("lam_range", True, False),
          "lr": ("lr_range", True, False), "steps": ("steps_range", False, True)}


def _ranges(search: DiffSearchSpec) -> Iterator[tuple[str, tuple[float, float], bool, bool]]:
    """(name, (low, high), log, integer) of each weight the spec gives a range."""
    for name, (field, log, integer) in PARAMS.items():
        lo_hi = getattr(search, field)
        if lo_hi is not None:
            yield name, lo_hi, log, integer


def suggest(trial: Any, spec: DiffTuningSpec) -> DiffTuningWeights:
    values: dict = {"lr": spec.finetune.lr, "steps": spec.finetune.steps}
    for name, (lo, hi), log, integer in _ranges(spec.search):
        if lo == hi:
            values[name] = lo
        elif integer:
            values[name] = trial.suggest_int(name, int(lo), int(hi), log=log)
        else:
            values[name] = trial.suggest_float(name, lo, hi, log=log)
    return DiffTuningWeights(**values)


def baseline(spec: DiffTuningSpec) -> dict[str, float]:
    """Plain fine-tuning: s = 0, r = 0, the spec's lr and steps. s' and lambda do nothing without a bank;
    they take their ranges' low ends, so that a log-scale lambda never sees 0."""
    search = spec.search
    plain = {"s": 0.0, "r": 0.0, "s_prime": search.s_prime_range[0], "lam": search.lam_range[0],
             "lr": spec.finetune.lr, "steps": spec.finetune.steps}
    return {name: plain[name] for name, (lo, hi), _, _ in _ranges(search) if lo != hi}
