"""Skip-Tuning's search space: an Optuna trial's parameters -> a schedule, and the baseline (rho = 1).

Parameter names and the order they are drawn in are part of a study's history (a resumed study replays
them), so they never change: ``rho_top``, ``rho_bottom``, ``rho_<level>``, ``sigma_a``, ``sigma_b``.
Optuna is not imported: any object with ``suggest_float`` (a trial or a FixedTrial) will do.
"""

from __future__ import annotations

from typing import Any

from skipsearch.methods.skip_tuning.schedules import LinearSkip, PerLevelSkip, TimeWindowSkip, _Schedule
from skipsearch.methods.skip_tuning.skip_spec import SkipSearchSpec


def suggest(trial: Any, search: SkipSearchSpec, n_levels: int) -> _Schedule:
    lo, hi = search.rho_range
    if search.family == "per_level":
        return PerLevelSkip(rho=tuple(trial.suggest_float(f"rho_{i}", lo, hi) for i in range(n_levels)))
    rho_top, rho_bottom = trial.suggest_float("rho_top", lo, hi), trial.suggest_float("rho_bottom", lo, hi)
    if search.family == "linear":
        return LinearSkip(rho_top=rho_top, rho_bottom=rho_bottom)
    s_lo, s_hi = search.sigma_range
    a = trial.suggest_float("sigma_a", s_lo, s_hi, log=True)
    b = trial.suggest_float("sigma_b", s_lo, s_hi, log=True)
    if a == b:  # a zero-width window would be invalid; widen it to the full range
        a, b = s_lo, s_hi
    return TimeWindowSkip(rho_top=rho_top, rho_bottom=rho_bottom, sigma_lo=min(a, b), sigma_hi=max(a, b))


def baseline(search: SkipSearchSpec, n_levels: int) -> dict[str, float]:
    """rho = 1 everywhere: the unmodified model, bit for bit."""
    if search.family == "per_level":
        return {f"rho_{i}": 1.0 for i in range(n_levels)}
    params = {"rho_top": 1.0, "rho_bottom": 1.0}
    if search.family == "time_window":
        params |= {"sigma_a": search.sigma_range[0], "sigma_b": search.sigma_range[1]}
    return params


EDGE = 0.02  # a rho within this share of rho_range's width from an end sits at that end


def searched_rhos(schedule: _Schedule) -> dict[str, float]:
    """The schedule's rho values by the Optuna parameter that drew them (window ends are not rho)."""
    if isinstance(schedule, PerLevelSkip):
        return {f"rho_{i}": r for i, r in enumerate(schedule.rho)}
    return {"rho_top": schedule.rho_top, "rho_bottom": schedule.rho_bottom}


def at_edges(schedule: _Schedule, search: SkipSearchSpec) -> tuple[str, ...]:
    """Each rho that sits at an end of ``search.rho_range`` (within ``EDGE`` of its width), said in words. The
    search could not look past that end, so a better schedule may lie beyond it (the range holds 1 strictly
    inside, so an end is never the baseline's own value)."""
    lo, hi = search.rho_range
    near = EDGE * (hi - lo)
    said = []
    for name, rho in searched_rhos(schedule).items():
        for end, word in ((lo, "lower"), (hi, "upper")):
            if abs(rho - end) <= near:
                said.append(f"{name} = {rho:.4g} at the {word} end of search.rho_range [{lo:g}, {hi:g}]")
    return tuple(said)
