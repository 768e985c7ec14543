"""Optuna search spaces: a trial's parameters -> coefficients (Skip-Tuning's rho or Diff-Tuning's weights),
and the baseline's parameters (rho = 1; plain fine-tuning)."""

from __future__ import annotations

import optuna
from pydantic import BaseModel

from skipsearch.difftuning import DiffTuningWeights
from skipsearch.skip import LinearSkip, PerLevelSkip, TimeWindowSkip, _Schedule
from skipsearch.spec import DiffSearchSpec, DiffTuningSpec, SearchSpec, Spec

# Diff-Tuning parameter -> (range field, log scale, integer)
DIFF_PARAMS = {"s": ("s_range", False, False), "s_prime": ("s_prime_range", False, False),
               "r": ("r_range", False, False), "lam": ("lam_range", True, False),
               "lr": ("lr_range", True, False), "steps": ("steps_range", False, True)}


def suggest(trial: optuna.trial.BaseTrial, spec: Spec, n_skips: int) -> BaseModel:
    """The trial's coefficients; ``n_skips`` matters only to Skip-Tuning."""
    if isinstance(spec, DiffTuningSpec):
        return suggest_diff_tuning(trial, spec)
    return suggest_skip(trial, spec.search, n_skips)


def _diff_ranges(search: DiffSearchSpec):
    """(name, (low, high), log, integer) of each weight the spec gives a range; low == high fixes it."""
    for name, (field, log, integer) in DIFF_PARAMS.items():
        lo_hi = getattr(search, field)
        if lo_hi is not None:
            yield name, lo_hi, log, integer


def suggest_diff_tuning(trial: optuna.trial.BaseTrial, spec: DiffTuningSpec) -> DiffTuningWeights:
    """A range whose ends are equal fixes that weight (it is not an Optuna parameter then)."""
    values: dict = {"lr": spec.finetune.lr, "steps": spec.finetune.steps}
    for name, (lo, hi), log, integer in _diff_ranges(spec.search):
        if lo == hi:
            values[name] = lo
        elif integer:
            values[name] = trial.suggest_int(name, int(lo), int(hi), log=log)
        else:
            values[name] = trial.suggest_float(name, lo, hi, log=log)
    return DiffTuningWeights(**values)


def diff_baseline_params(spec: DiffTuningSpec) -> dict[str, float]:
    """Plain fine-tuning: s = 0, r = 0, the spec's lr and steps. s' and lambda do nothing without a bank;
    they take their ranges' low ends, so that a log-scale lambda never sees 0."""
    search = spec.search
    plain = {"s": 0.0, "r": 0.0, "s_prime": search.s_prime_range[0], "lam": search.lam_range[0],
             "lr": spec.finetune.lr, "steps": spec.finetune.steps}
    return {name: plain[name] for name, (lo, hi), _, _ in _diff_ranges(search) if lo != hi}


def suggest_skip(trial: optuna.trial.BaseTrial, search: SearchSpec, n_skips: int) -> _Schedule:
    lo, hi = search.rho_range
    if search.family == "per_level":
        return PerLevelSkip(rho=tuple(trial.suggest_float(f"rho_{i}", lo, hi) for i in range(n_skips)))
    rho_top, rho_bottom = trial.suggest_float("rho_top", lo, hi), trial.suggest_float("rho_bottom", lo, hi)
    if search.family == "linear":
        return LinearSkip(rho_top=rho_top, rho_bottom=rho_bottom)
    s_lo, s_hi = search.sigma_range
    a = trial.suggest_float("sigma_a", s_lo, s_hi, log=True)
    b = trial.suggest_float("sigma_b", s_lo, s_hi, log=True)
    if a == b:  # a zero-width window would be invalid; widen it to the full range
        a, b = s_lo, s_hi
    return TimeWindowSkip(rho_top=rho_top, rho_bottom=rho_bottom, sigma_lo=min(a, b), sigma_hi=max(a, b))


def baseline_params(spec: Spec, n_skips: int) -> dict[str, float]:
    """Parameters of the baseline: rho = 1 everywhere (the unmodified model), or plain fine-tuning."""
    if isinstance(spec, DiffTuningSpec):
        return diff_baseline_params(spec)
    search = spec.search
    if search.family == "per_level":
        return {f"rho_{i}": 1.0 for i in range(n_skips)}
    params = {"rho_top": 1.0, "rho_bottom": 1.0}
    if search.family == "time_window":
        params |= {"sigma_a": search.sigma_range[0], "sigma_b": search.sigma_range[1]}
    return params
