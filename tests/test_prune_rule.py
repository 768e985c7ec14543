"""Whether a trial stops early is one rule (``search.fidelity.stops``) that every in-process path runs through:
the baseline is never stopped, nor a multi-objective trial, whatever the pruner says; any other trial stops when
the pruner says so. Each study here gets a pruner that prunes every trial it is asked about."""

from __future__ import annotations

import optuna
import pytest
from conftest import tiny_dt_spec_dict, tiny_spec_dict

from skipsearch.search import driver
from skipsearch.search.driver import open_study
from skipsearch.search.fidelity import stops
from skipsearch.specfile import parse_spec


class PruneAll(optuna.pruners.BasePruner):
    """Prunes every trial at every step it is asked about, and counts the questions."""

    def __init__(self) -> None:
        self.asked = 0

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        self.asked += 1
        return True


def _run(tmp_path, spec):
    """The study under a pruner that prunes everything; its trials' (number, role, state, N) and the pruner."""
    ctx = open_study(spec, f"sqlite:///{tmp_path / 'p.db'}", echo=lambda line: None)
    try:
        ctx.study.pruner = PruneAll()
        driver.search(ctx, spec.search.trials, progress=False)
        frame = ctx.store.trials_frame(spec.name).sort_values("trial_number")
        return [(r.trial_number, r.role, r.state, r.n) for r in frame.itertuples()], ctx.study.pruner
    finally:
        ctx.close()


@pytest.mark.parametrize("batch_trials", [1, 3])
def test_the_baseline_completes_under_a_pruner_that_prunes_all(tmp_path, batch_trials):
    """Alone (K = 1) and in a shared batch (K = 3), through the same step: the baseline reaches N, the others stop
    at the first rung."""
    spec = parse_spec(tiny_spec_dict(f"prune-{batch_trials}", metric={"n": 64, "rungs": [32], "batch_size": 32},
                                     search={"trials": 3, "batch_trials": batch_trials}))
    trials, pruner = _run(tmp_path, spec)
    assert trials == [(0, "baseline", "COMPLETE", 64), (1, "search", "PRUNED", 32), (2, "search", "PRUNED", 32)]
    assert pruner.asked == 2  # once for each search trial, never for the baseline


def test_a_method_without_batching_stops_through_the_same_rule(tmp_path):
    """Diff-Tuning's training-step rungs, run as a one-trial batch: the baseline trains to the end, the other
    trial stops at its first evaluation step."""
    spec = parse_spec(tiny_dt_spec_dict("prune-dt", weights_dir=str(tmp_path / "w"), search={"trials": 2}))
    trials, pruner = _run(tmp_path, spec)
    assert trials == [(0, "baseline", "COMPLETE", 64), (1, "search", "PRUNED", 64)]
    assert pruner.asked == 1


def test_the_rule_never_asks_about_the_baseline_or_a_multi_objective_trial():
    def refuse() -> bool:
        raise AssertionError("the pruner was asked")

    assert not stops("baseline", False, refuse)
    assert not stops("search", True, refuse)
    assert stops("search", False, lambda: True) and not stops("search", False, lambda: False)
