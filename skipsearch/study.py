"""The study driver: reserve a trial -> evaluate() -> record (``skipsearch.recording``).

Any number of drivers may share a study (``skipsearch.coordination``). Under the study lock a driver
recovers what dead drivers left, counts the study-wide budget, enqueues the one baseline and asks Optuna for
a trial, which it claims. With a ladder of sample counts, each rung is reported to Optuna at step = N; a
trial stopped early is PRUNED, and only a trial that reached the top rung is COMPLETE.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from tqdm.auto import tqdm

from skipsearch import deadline
from skipsearch.context import StudyContext
from skipsearch.coordination import Driver, study_lock, trial_item
from skipsearch.errors import StorageError, UserError
from skipsearch.evaluate import TRIAL_ERRORS, evaluate_ladder, failure_reason
from skipsearch.recording import (baseline_trial, baseline_fid, record_failure, record_result, record_rung,
                                  recover_stale)
from skipsearch.resolve import resolve
from skipsearch.seeding import PerTrialSeed
from skipsearch.space import baseline_params, suggest
from skipsearch.spec import DiffTuningSpec, Spec
from skipsearch.storage import Store, engine_kwargs, urls

SCIENCE_FIELDS = ("kind", "model", "sampler", "metric", "search.family", "search.rho_range", "search.sigma_range",
                  "search.s_range", "search.s_prime_range", "search.r_range", "search.lam_range", "search.lr_range",
                  "search.steps_range", "search.objectives", *(f"finetune.{f}" for f in (
                      "data", "n_images", "data_seed", "source_reference", "steps", "lr", "batch_size",
                      "eval_steps", "bank_size", "bank_seed", "seed")))
POLL_S = 1.0  # how often a driver waiting on other drivers' trials looks again
OPTUNA_ATTEMPTS = 8
WAIT = "wait"  # reserve(): the budget is taken, but trials are still in flight


def trial_ladder(task, coefficients: BaseModel, weights_path: Path | None = None,
                 progress: bool = False, timeout_s: float | None = None) -> Iterator[dict]:
    """A trial's results as dicts, one per rung: sample counts for an EvalTask (Skip-Tuning), fine-tuning
    steps for a FinetuneTask (Diff-Tuning). The one path for in-process and Ray trials. Past ``timeout_s``
    the trial raises TrialTimeout at its next network evaluation or training step."""
    from skipsearch.finetuning import FinetuneTask, finetune_ladder

    with deadline.limit(timeout_s):
        if isinstance(task, FinetuneTask):
            yield from finetune_ladder(task, coefficients, weights_path, progress)
            return
        ladder = evaluate_ladder(task, coefficients, progress=progress)
        try:
            for result in ladder:
                yield result.to_dict()
        finally:
            ladder.close()  # a pruned trial's hooks come off now


def open_optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on the same database; a second process creating its tables at the same moment
    retries (it then finds them) instead of failing on 'table alembic_version already exists'."""
    for attempt in range(OPTUNA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
            if attempt == OPTUNA_ATTEMPTS - 1:
                raise StorageError(f"cannot open Optuna's storage in {urls.shown(url)}: "
                                   f"{urls.error_line(err, url)}") from None
            time.sleep(random.uniform(0.05, 0.3))
    raise AssertionError("unreachable")


def _pick(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


def check_same_science(name: str, first: dict, now: dict) -> None:
    """A study's numbers are only comparable if model, sampler, metric and space never change."""
    changed = [f for f in SCIENCE_FIELDS if _pick(first, f) != _pick(now, f)]
    if changed:
        raise UserError(f"study {name!r} exists with a different {', '.join(changed)}; its trials would not be "
                        f"comparable. Use a new study name, or restore the original values.")


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    """In-process multi-fidelity: successive halving on the same rungs that ASHA uses under Ray. Diff-Tuning
    prunes a trial whose target FID at an evaluation step is worse than the median of earlier trials there
    (Optuna cannot prune multi-objective studies)."""
    if isinstance(spec, DiffTuningSpec):
        if not spec.finetune.eval_steps or spec.search.multi_objective:
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    m = spec.metric
    if not m.rungs:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=m.rungs[0], reduction_factor=m.reduction_factor,
                                                  min_early_stopping_rate=0)


def stored_form(spec: Spec) -> dict:
    """The spec as the database keeps it: its storage URL without the password."""
    raw = spec.model_dump(mode="json")
    try:
        raw["storage"] = urls.without_password(urls.parse(spec.storage))
    except UserError:  # not usable as it stands (another machine's path?): kept, any password masked
        raw["storage"] = urls.shown(spec.storage)
    return raw


def open_study(spec: Spec, storage: str | None = None, source: str = "spec",
               echo: Callable[[str], None] = tqdm.write) -> StudyContext:
    """Check everything the spec names, then open (or create) the study and join it as a driver."""
    url = urls.choose(storage, spec.storage)
    urls.parse(url)
    resolved = resolve(spec, source)
    for warning in resolved.warnings:
        echo(f"warning: {warning}")
    store = Store(url)
    first = store.save_study(spec.name, stored_form(spec))
    check_same_science(spec.name, first, spec.model_dump(mode="json"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_optuna_storage(url)
    n_obj = len(spec.search.objectives) if isinstance(spec, DiffTuningSpec) else 1
    study = optuna.create_study(study_name=spec.name, storage=rdb, directions=["minimize"] * n_obj,
                                sampler=PerTrialSeed(spec.search.sampler, spec.search.seed),
                                pruner=make_pruner(spec), load_if_exists=True)
    return StudyContext(spec, store, study, rdb, Driver(store, spec.name), resolved.info.n_skips, echo)


def ensure_baseline(ctx: StudyContext, trials=None) -> None:
    """Exactly one live baseline (waiting, running or complete) in the study; under the study lock."""
    if baseline_trial(trials if trials is not None else ctx.study.get_trials(deepcopy=False)) is None:
        ctx.study.enqueue_trial(baseline_params(ctx.spec, ctx.n_skips), user_attrs={"role": "baseline"},
                                skip_if_exists=False)


def counted(ctx: StudyContext, trials=None) -> tuple[int, int]:
    """(trials that count towards the budget, of which in flight): finished evaluated trials, plus those
    claimed by live drivers; a trial killed in flight or stopped by a bug does not count."""
    trials = trials if trials is not None else ctx.study.get_trials(deepcopy=False)
    in_flight = {c["trial_number"] for c in ctx.store.claims(ctx.spec.name, "trial:")}
    done = {t.number for t in trials if t.state.is_finished() and t.user_attrs.get("evaluated", True)}
    return len(done | in_flight), len(in_flight - done)


def reserve(ctx: StudyContext, budget: int) -> optuna.trial.Trial | str | None:
    """The next trial for this driver, WAIT while other trials are in flight and the budget is taken, or
    None when the study has its budget of evaluated trials."""
    with study_lock(ctx.driver):
        recover_stale(ctx)
        trials = ctx.study.get_trials(deepcopy=False)
        used, in_flight = counted(ctx, trials)
        if used >= budget:
            return WAIT if in_flight else None
        ensure_baseline(ctx, trials)
        trial = ctx.study.ask()
        if not ctx.store.try_claim(ctx.spec.name, trial_item(trial.number), ctx.driver.id, trial.number):
            raise RuntimeError(f"trial {trial.number} was asked under the study lock but is already claimed")
        return trial


def ask(ctx: StudyContext, trial: optuna.trial.Trial) -> tuple[str, BaseModel]:
    return trial.user_attrs.get("role", "search"), suggest(trial, ctx.spec, ctx.n_skips)


def run_trial(ctx: StudyContext, trial: optuna.trial.Trial,
              progress: bool = False) -> tuple[int, str, dict | None, str | None]:
    """One in-process trial: (number, state, last result, failure reason)."""
    role, coeffs = ask(ctx, trial)
    cj, result = coeffs.model_dump_json(), None
    ladder = trial_ladder(ctx.trial_task, coeffs, ctx.weights_path(trial.number), progress, ctx.trial_timeout_s)
    try:
        for result in ladder:
            record_rung(ctx, trial, result)
            if role != "baseline" and not ctx.multi_objective and trial.should_prune():
                break
    except TRIAL_ERRORS as err:
        reason = failure_reason(err)
        record_failure(ctx, trial.number, role, cj, reason)
        return trial.number, "FAIL", None, reason
    except BaseException as err:  # interrupted, a user mistake found late, or a bug: record why, then re-raise
        record_failure(ctx, trial.number, role, cj, stop_reason(err), evaluated=False)
        raise
    finally:
        ladder.close()
    return trial.number, record_result(ctx, trial.number, role, cj, result), result, None


def stop_reason(err: BaseException) -> str:
    """Why a trial stopped that is not its own failure (it does not count towards the budget)."""
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
        return f"interrupted ({type(err).__name__}) before the trial finished"
    if isinstance(err, UserError):
        return f"stopped: {str(err).splitlines()[0]}"
    return f"skipsearch bug: {type(err).__name__}: {err}"


def trial_line(ctx: StudyContext, number: int, state: str, result: dict | None, reason: str | None) -> str:
    if state == "FAIL":
        return f"trial {number:3d}  FAIL      {reason}"
    base = baseline_fid(ctx)
    delta = f"{result['fid'] - base:+8.4f}" if base is not None and state == "COMPLETE" else "        "
    at = f"step {result['step']:<5d}" if "step" in result else ""
    source = f"  source FID {result['source_fid']:8.4f}" if result.get("source_fid") is not None else ""
    return (f"trial {number:3d}  {state:8s}  {at}N={result['n']:<6d} FID {result['fid']:8.4f}  dFID {delta}  "
            f"KID {result['kid']:.5f}{source}  {result['wall_s']:5.1f}s")


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


def search(ctx: StudyContext, budget: int) -> None:
    """Run trials until the study holds ``budget`` evaluated trials, whichever drivers ran them."""
    used, _ = counted(ctx)
    bar = tqdm(total=max(0, budget - used), desc=f"study {ctx.spec.name}", unit="trial", file=sys.stderr,
               disable=None)
    ran, waiting = 0, Waiting(ctx)
    while True:
        ctx.driver.check_heartbeat()
        trial = reserve(ctx, budget)
        if trial is None:
            break
        if trial == WAIT:
            waiting()
            continue
        waiting.reset()
        number, state, result, reason = run_trial(ctx, trial, progress=not bar.disable)
        ran += 1
        bar.update()
        ctx.echo(trial_line(ctx, number, state, result, reason))
    bar.close()
    if ran == 0:
        say_budget_reached(ctx, counted(ctx)[0], budget)


def say_budget_reached(ctx: StudyContext, used: int, budget: int) -> None:
    ctx.echo(f"trial budget reached ({used}/{budget}); pass --trials to extend the search")
