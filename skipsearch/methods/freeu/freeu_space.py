"""FreeU's search space: an Optuna trial's parameters -> coefficients, and the baseline (FreeU off).

Parameter names and the order they are drawn in are part of a study's history (a resumed study replays
them), so they never change: ``b1``, ``b2``, ``s1``, ``s2``, then, with ``combine_skip``, Skip-Tuning's own
(``rho_top``, ``rho_bottom``, ``rho_<level>``, ``sigma_a``, ``sigma_b``, drawn by ``skip_tuning.space``).

The baseline enqueues b1 = b2 = s1 = s2 = 1, which ``suggest`` turns into ``FreeU.off()``: coefficients whose
``is_identity()`` is true and whose apply leaves the model alone. (diffusers' FreeU at b = s = 1 is not the
identity bit for bit: the skip features go through an FFT and back, so the exact point 1 is taken as "off".)
Optuna is not imported: any object with ``suggest_float`` (a trial or a FixedTrial) will do.
"""

from __future__ import annotations

from typing import Any

from skipsearch.methods.freeu.factors import KEYS, OFF_VALUE, FreeU, SkipFreeU
from skipsearch.methods.freeu.freeu_spec import FreeUSearchSpec
from skipsearch.methods.skip_tuning import skip_space as skip_space


def suggest(trial: Any, search: FreeUSearchSpec, n_levels: int) -> FreeU | SkipFreeU:
    ranges = {"b1": search.b_range, "b2": search.b_range, "s1": search.s_range, "s2": search.s_range}
    freeu = FreeU(**{k: trial.suggest_float(k, *ranges[k]) for k in KEYS})  # all four 1.0: FreeU off
    if not search.combine_skip:
        return freeu
    return SkipFreeU(skip=skip_space.suggest(trial, search.skip, n_levels), freeu=freeu)


def baseline(search: FreeUSearchSpec, n_levels: int) -> dict[str, float]:
    """FreeU off (and, combined, rho = 1): the unmodified model, bit for bit."""
    params = {k: OFF_VALUE for k in KEYS}
    if search.combine_skip:
        params |= skip_space.baseline(search.skip, n_levels)
    return params
