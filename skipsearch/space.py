"""Optuna search spaces: a trial's parameters -> Skip-Tuning coefficients, and the baseline's parameters."""

from __future__ import annotations

import optuna

from skipsearch.skip import LinearSkip, PerLevelSkip, TimeWindowSkip, _Schedule
from skipsearch.spec import SearchSpec


def suggest(trial: optuna.trial.BaseTrial, search: SearchSpec, n_skips: int) -> _Schedule:
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


def baseline_params(search: SearchSpec, n_skips: int) -> dict[str, float]:
    """Parameters whose coefficients are rho = 1 everywhere (the unmodified model)."""
    if search.family == "per_level":
        return {f"rho_{i}": 1.0 for i in range(n_skips)}
    params = {"rho_top": 1.0, "rho_bottom": 1.0}
    if search.family == "time_window":
        params |= {"sigma_a": search.sigma_range[0], "sigma_b": search.sigma_range[1]}
    return params


def make_sampler(search: SearchSpec) -> optuna.samplers.BaseSampler:
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    if search.sampler == "gp":
        return optuna.samplers.GPSampler(seed=search.seed)
    return optuna.samplers.TPESampler(seed=search.seed)
