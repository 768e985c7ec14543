"""The steps of one trial that every way of running it shares (in-process, in shared batches, on Ray): the
method's rungs under the trial timeout (one trial of the method's ``trial_batch``, as the driver runs it),
asking Optuna for the coefficients, how a trial ended, and settling a trial that something other than its own
failure stopped. Whether a trial stops early is ``fidelity.stops``, for every placement.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna

from skipsearch import deadline
from skipsearch.errors import Terminated, UserError
from skipsearch.files import machine_failure
from skipsearch.methods import Coefficients, method_for
from skipsearch.results import Rung
from skipsearch.rungs import alone
from skipsearch.search.context import StudyContext
from skipsearch.search.recording import settle
from skipsearch.spec import Spec


def trial_ladder(spec: Spec, coefficients: Coefficients, artifact: Path | None = None,
                 progress: bool = False) -> Iterator[Rung]:
    """One trial's rungs, for a Ray worker or a benchmark: the method's ``trial_batch`` with K = 1, the generator
    the in-process driver runs (``batch_trials.run_batch``). Past ``search.trial_timeout_s`` the trial raises
    TrialTimeout at its next network evaluation or training step; its own failure is raised; closing the
    iterator early (a pruned trial) undoes what the method applied."""
    with deadline.limit(spec.search.trial_timeout_s):
        yield from alone(method_for(spec.kind).trial_batch(spec, [coefficients], progress, [artifact]))


def ask(ctx: StudyContext, trial: optuna.trial.Trial) -> tuple[str, Coefficients]:
    """The trial's role and coefficients; its profile plots start drawing now, while it runs."""
    coefficients = ctx.method.suggest(trial, ctx.spec, ctx.info)
    if ctx.artifacts is not None:
        ctx.plots.prepare(trial.number, ctx.method.profiles(ctx.spec, coefficients, ctx.info))
    return trial.user_attrs.get("role", "search"), coefficients


@dataclass(frozen=True, kw_only=True)
class Finished:
    """How one trial ended, as this driver saw it: its state, last rung, or failure reason."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL (or LOST: another driver took it over)
    rung: Rung | None = None
    reason: str | None = None


def stopped(ctx: StudyContext, number: int, role: str, coefficients_json: str, err: BaseException) -> None:
    """Settle a trial that ``err`` stops (``recording.settle``: never left RUNNING). Should that fail too (the
    database is gone with the disk), ``err`` is still what the caller re-raises; the next run recovers the trial."""
    try:
        settle(ctx, number, role, coefficients_json, stop_reason(err))
    except Exception as inner:  # noqa: BLE001 - the original error is the one to report
        ctx.echo(f"trial {number}: could not record why it stopped ({type(inner).__name__}: "
                 f"{str(inner).splitlines()[0] if str(inner) else ''}); the next run marks it FAIL")


def stop_reason(err: BaseException) -> str:
    """Why a trial stopped that is not its own failure (it does not count towards the budget)."""
    if isinstance(err, Terminated):
        return "terminated (SIGTERM) before the trial finished"
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
        return f"interrupted ({type(err).__name__}) before the trial finished"
    if isinstance(err, UserError):
        return f"stopped: {str(err).splitlines()[0]}"
    machine = machine_failure(err)
    if machine is not None:
        return f"stopped: {machine}"
    return f"skipsearch bug: {type(err).__name__}: {err}"
