"""Early stopping from one description: a method's ``Fidelity`` -> the in-process Optuna pruner and the Ray
scheduler, built side by side so the two placements stop the same trials at the same rungs.

The baseline is never stopped (every trial's dFID is measured against it); Optuna's trial loop skips the
pruner for it, and the Ray scheduler is wrapped to let it continue.
"""

from __future__ import annotations

import optuna

from skipsearch.methods import Fidelity


def pruner(f: Fidelity) -> optuna.pruners.BasePruner:
    if f.rule == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=f.first, reduction_factor=f.factor,
                                                      min_early_stopping_rate=0)
    if f.rule == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=f.startup, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def scheduler(f: Fidelity):
    """ASHA or the median stopping rule on the time attribute ``progress`` (the fidelity's unit), else FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if f.rule == "halving":
        return _keeping_baseline(ASHAScheduler, f.top)(time_attr="progress", max_t=f.top, grace_period=f.first,
                                                       reduction_factor=f.factor)
    if f.rule == "median":
        return _keeping_baseline(MedianStoppingRule, f.top)(time_attr="progress", grace_period=f.first,
                                                            min_samples_required=f.startup, hard_stop=True)
    return FIFOScheduler()


def _keeping_baseline(scheduler_class, top: int):
    from ray.tune.schedulers import TrialScheduler

    class BaselineKeeping(scheduler_class):
        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if trial.config.get("role") == "baseline" and result.get("progress", 0) < top:
                return TrialScheduler.CONTINUE
            return action

    return BaselineKeeping
