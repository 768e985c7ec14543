"""The study-wide budget of evaluated trials, shared by every driver (``coordination``): what counts, how a driver
reserves its next trials under the study lock (enqueueing the one baseline first), and waiting while other
drivers' trials are in flight. The in-process loop, Ray's searcher and confirmation read it.
"""

from __future__ import annotations

import time

import optuna

from skipsearch.search.context import StudyContext
from skipsearch.search.coordination import study_lock, trial_item
from skipsearch.search.recording import baseline_trial, recover_stale

POLL_S = 1.0  # how often a driver waiting on other drivers' trials looks again
WAIT = "wait"  # reserve(): the budget is taken, but trials are still in flight


def ensure_baseline(ctx: StudyContext, trials=None) -> None:
    """Exactly one live baseline (waiting, running or complete) in the study; under the study lock."""
    if baseline_trial(trials if trials is not None else ctx.study.get_trials(deepcopy=False)) is None:
        ctx.study.enqueue_trial(ctx.method.baseline(ctx.spec, ctx.info), user_attrs={"role": "baseline"},
                                skip_if_exists=False)


def counted(ctx: StudyContext, trials=None) -> tuple[int, int]:
    """(trials that count towards the budget, of which in flight): finished evaluated trials, plus those
    claimed by live drivers; a trial killed in flight or stopped by a bug does not count."""
    trials = trials if trials is not None else ctx.study.get_trials(deepcopy=False)
    in_flight = {c["trial_number"] for c in ctx.store.claims(ctx.spec.name, "trial:")}
    done = {t.number for t in trials if t.state.is_finished() and t.user_attrs.get("evaluated", True)}
    return len(done | in_flight), len(in_flight - done)


def evaluated(ctx: StudyContext, budget: int) -> int:
    """The study's evaluated trials so far, as its progress counts them (never past ``budget``). Progress counts
    these, not the trials this driver ran: a trial left RUNNING by a killed driver, a trial another driver took over
    (LOST here) and one stopped by an interruption or a bug are not evaluated, and other drivers' trials are."""
    used, in_flight = counted(ctx)
    return min(budget, used - in_flight)


def reserve(ctx: StudyContext, budget: int) -> optuna.trial.Trial | str | None:
    """The next trial for this driver, WAIT while other trials are in flight and the budget is taken, or
    None when the study has its budget of evaluated trials."""
    got = reserve_many(ctx, budget, 1)
    return got[0] if isinstance(got, list) else got


def reserve_many(ctx: StudyContext, budget: int, count: int) -> list[optuna.trial.Trial] | str | None:
    """Up to ``count`` trials at once (as many as the budget leaves), asked and claimed under the study lock;
    WAIT or None as ``reserve``."""
    with study_lock(ctx.driver):
        recover_stale(ctx)
        trials = ctx.study.get_trials(deepcopy=False)
        used, in_flight = counted(ctx, trials)
        if used >= budget:
            return WAIT if in_flight else None
        ensure_baseline(ctx, trials)
        asked = []
        for _ in range(min(count, budget - used)):
            trial = ctx.study.ask()
            if not ctx.store.try_claim(ctx.spec.name, trial_item(trial.number), ctx.driver.id, trial.number):
                raise RuntimeError(f"trial {trial.number} was asked under the study lock but is already claimed")
            asked.append(trial)
        return asked


class Waiting:
    """Says once (not at every look) that this driver waits for other drivers' trials."""

    def __init__(self, ctx: StudyContext):
        self.ctx, self.said = ctx, False

    def announce(self) -> None:
        if not self.said:
            _, in_flight = counted(self.ctx)
            self.ctx.echo(f"the budget is taken; waiting for {in_flight} trial(s) still in flight on other drivers")
            self.said = True

    def __call__(self) -> None:
        self.announce()
        time.sleep(POLL_S)

    def reset(self) -> None:
        self.said = False
