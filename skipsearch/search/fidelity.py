"""Early stopping from one description: a method's ``Fidelity`` -> the in-process Optuna pruner and the Ray
scheduler, built side by side so the two placements stop the same trials at the same rungs.

Whether a trial stops is decided in one place, ``stops``: never the baseline (every trial's dFID is measured
against it), never a multi-objective trial (Optuna cannot prune two objectives), else the pruner's or the
scheduler's verdict. The in-process step (``batch_trials.run_batch``, a lone trial included) asks it with the
Optuna pruner's verdict, and the Ray scheduler is wrapped to ask it with its own.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from skipsearch.methods import Fidelity


def stops(role: str, multi_objective: bool, verdict: Callable[[], bool]) -> bool:
    """Whether a trial stops early at this rung: the rule of every placement. ``verdict`` (the pruner's or the
    scheduler's) is asked only for a trial that may stop."""
    return role != "baseline" and not multi_objective and verdict()


def pruner(f: Fidelity) -> optuna.pruners.BasePruner:
    if f.rule == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=f.first, reduction_factor=f.factor,
                                                      min_early_stopping_rate=0)
    if f.rule == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=f.startup, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def scheduler(f: Fidelity, multi_objective: bool = False):
    """ASHA or the median stopping rule on the time attribute ``progress`` (the fidelity's unit), else FIFO; a
    trial that ``stops`` keeps going (the baseline) continues whatever the rule says."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if f.rule == "halving":
        return _ruled(ASHAScheduler, f.top, multi_objective)(time_attr="progress", max_t=f.top, grace_period=f.first,
                                                             reduction_factor=f.factor)
    if f.rule == "median":
        return _ruled(MedianStoppingRule, f.top, multi_objective)(time_attr="progress", grace_period=f.first,
                                                                  min_samples_required=f.startup, hard_stop=True)
    return FIFOScheduler()


def _ruled(scheduler_class, top: int, multi_objective: bool):
    from ray.tune.schedulers import TrialScheduler

    class StopsByRule(scheduler_class):
        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)  # the rule sees every result
            role = trial.config.get("role", "search")
            if result.get("progress", 0) < top and not stops(role, multi_objective, lambda: True):
                return TrialScheduler.CONTINUE
            return action

    return StopsByRule
