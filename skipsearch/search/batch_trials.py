"""The one in-process trial step: K >= 1 trials through the method's ``trial_batch``, as the driver runs and records
them (a lone trial is K = 1; ``evaluate.Evaluator.trials`` samples them, ``skipsearch.batched`` says why K > 1).

The driver asks Optuna for K trials at once under the study lock and claims each. At every rung each trial is
recorded as it would be alone: its rung, then (pruned, complete, or its own failure) its result, while the other
trials go on. A failure of the shared work (a timeout, running out of memory) fails every trial still running,
and an interruption (Ctrl-C, SIGTERM), a failed write or a bug records them all as not evaluated (a trial
whose recording it cut short: as its row says) before it propagates.
"""

from __future__ import annotations

from collections.abc import Generator

import optuna

from skipsearch import deadline
from skipsearch.evaluate import TRIAL_ERRORS, failure_reason, resolve_device
from skipsearch.results import Rung
from skipsearch.search.context import StudyContext
from skipsearch.search.fidelity import stops
from skipsearch.search.recording import record_failure, record_result, record_rung
from skipsearch.search.trial_steps import Finished, ask, stopped


def trials_per_batch(ctx: StudyContext, budget: int) -> int:
    """K from the spec (``search.batch_trials``), with "auto" measured on the device (1 on a CPU), never more
    than the budget."""
    asked = ctx.method.batch_trials(ctx.spec)
    if asked == "auto":
        if resolve_device(ctx.spec.device) == "cpu":
            return 1
        from skipsearch.batched import auto_trials_per_batch
        from skipsearch.evaluate import evaluator_for
        from skipsearch.methods.sampled import eval_task

        task = eval_task(ctx.spec, n=ctx.spec.metric.n, seed_start=ctx.spec.metric.seed)
        asked = auto_trials_per_batch(evaluator_for(task), task)
    return max(1, min(asked, budget))


def run_batch(ctx: StudyContext, trials: list[optuna.trial.Trial], progress: bool = False) -> list[Finished]:
    """Run ``trials`` (K >= 1) through the method's ``trial_batch``: the one step of every in-process trial, a lone
    trial being K = 1 (``driver.run_trial``). Returns how each ended, in order. Whether a trial stops early is
    ``fidelity.stops``. The trial timeout covers the whole batch, scaled by its number of trials."""
    asked = [ask(ctx, t) for t in trials]
    roles = [role for role, _ in asked]
    jsons = [c.model_dump_json() for _, c in asked]
    artifacts = [ctx.method.artifact(ctx.spec, t.number) for t in trials]
    finished: dict[int, Finished] = {}
    last: dict[int, Rung] = {}

    def result(k: int, rung: Rung) -> None:
        finished[k] = Finished(number=trials[k].number, rung=rung,
                               state=record_result(ctx, trials[k].number, roles[k], jsons[k], rung))

    def failure(k: int, reason: str, evaluated: bool = True) -> None:
        record_failure(ctx, trials[k].number, roles[k], jsons[k], reason, evaluated=evaluated)
        finished[k] = Finished(number=trials[k].number, state="FAIL", reason=reason)

    timeout = ctx.spec.search.trial_timeout_s
    with deadline.limit(None if timeout is None else timeout * len(trials)):
        ladder = None
        try:
            ladder = ctx.method.trial_batch(ctx.spec, [c for _, c in asked], progress, artifacts)
            stop: set[int] | None = None
            while (results := _advance(ladder, stop)) is not None:
                stop = set()
                for k, rung in results.items():
                    if not isinstance(rung, Rung):  # this trial's own failure
                        failure(k, failure_reason(rung))
                        continue
                    record_rung(ctx, trials[k], rung)
                    last[k] = rung
                    if rung.final:
                        result(k, rung)
                    elif stops(roles[k], ctx.multi_objective, trials[k].should_prune):
                        result(k, rung)
                        stop.add(k)
            for k, rung in last.items():  # a ladder that ended below its top rung: PRUNED there
                if k not in finished:
                    result(k, rung)
        except TRIAL_ERRORS as err:  # the shared work failed: every trial still running fails with it
            for k in range(len(trials)):
                if k not in finished:
                    failure(k, failure_reason(err))
        except BaseException as err:  # each trial still held is settled: told from its row if it has one (its
            for k in range(len(trials)):  # recording was cut short), else FAIL, not evaluated
                if k not in finished:
                    stopped(ctx, trials[k].number, roles[k], jsons[k], err)
            raise
        finally:
            if ladder is not None:
                ladder.close()
    missing = [trials[k].number for k in range(len(trials)) if k not in finished]
    if missing:
        raise RuntimeError(f"the trials' ladder ended without a result for trial(s) {missing}")
    return [finished[k] for k in range(len(trials))]


def _advance(ladder: Generator, stop: set[int] | None) -> dict | None:
    """The ladder's next rung (having told it which trials stop), or None once it has ended."""
    try:
        return ladder.send(stop)
    except StopIteration:
        return None
