"""Trials that share network batches, as the driver runs and records them (``skipsearch.batched`` samples them).

The driver asks Optuna for K trials at once under the study lock and claims each. At every rung each trial is
recorded as it would be alone: its rung, then (pruned, complete, or its own failure) its result, while the other
trials go on. A failure of the shared work (a timeout, running out of memory) fails every trial still running,
and an interruption (Ctrl-C, SIGTERM), a failed write or a bug records them all as not evaluated (a trial
whose recording it cut short: as its row says) before it propagates.
"""

from __future__ import annotations

import optuna

from skipsearch import deadline
from skipsearch.evaluate import TRIAL_ERRORS, failure_reason, resolve_device
from skipsearch.results import Rung
from skipsearch.search.context import StudyContext
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


def run_batch(ctx: StudyContext, trials: list[optuna.trial.Trial], progress: bool = False) -> list:
    """Run ``trials`` in shared batches; returns how each ended (``trial_steps.Finished``), in order. The trial
    timeout covers the whole batch, scaled by its number of trials."""
    asked = [ask(ctx, t) for t in trials]
    roles = [role for role, _ in asked]
    jsons = [c.model_dump_json() for _, c in asked]
    finished: dict[int, Finished] = {}

    def result(k: int, rung: Rung) -> None:
        finished[k] = Finished(number=trials[k].number, rung=rung,
                               state=record_result(ctx, trials[k].number, roles[k], jsons[k], rung))

    def failure(k: int, reason: str, evaluated: bool = True) -> None:
        record_failure(ctx, trials[k].number, roles[k], jsons[k], reason, evaluated=evaluated)
        finished[k] = Finished(number=trials[k].number, state="FAIL", reason=reason)

    timeout = ctx.spec.search.trial_timeout_s
    with deadline.limit(None if timeout is None else timeout * len(trials)):
        ladder = ctx.method.trial_batch(ctx.spec, [c for _, c in asked], progress)
        try:
            results = next(ladder)
            while True:
                stop: set[int] = set()
                for k, rung in results.items():
                    if not isinstance(rung, Rung):  # this trial's own failure
                        failure(k, failure_reason(rung))
                        continue
                    record_rung(ctx, trials[k], rung)
                    if rung.final:
                        result(k, rung)
                    elif roles[k] != "baseline" and not ctx.multi_objective and trials[k].should_prune():
                        result(k, rung)
                        stop.add(k)
                results = ladder.send(stop)
        except StopIteration:
            pass
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
            ladder.close()
    missing = [trials[k].number for k in range(len(trials)) if k not in finished]
    if missing:
        raise RuntimeError(f"the shared ladder ended without a result for trial(s) {missing}")
    return [finished[k] for k in range(len(trials))]
