"""The study driver: open a study, then reserve a trial (``budget``) -> the method's trial (``trial_steps``) ->
record (``recording``), until the budget is reached.

Any number of drivers may share a study (``coordination``). Under the study lock a driver
recovers what dead drivers left, counts the study-wide budget, enqueues the one baseline and asks Optuna for
a trial, which it claims. With a ladder of sample counts, each rung is reported to Optuna at step = N; a
trial stopped early is PRUNED, and only a trial that reached the top rung is COMPLETE.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import optuna
from sqlalchemy.exc import SQLAlchemyError
from tqdm.auto import tqdm

from skipsearch.errors import StorageError
from skipsearch.methods import method_for
from skipsearch.progress import Progress
from skipsearch.resolve import resolve
from skipsearch.search.annotations import annotate_study
from skipsearch.search.batch_trials import run_batch, trials_per_batch
from skipsearch.search.context import StudyContext
from skipsearch.search.coordination import Driver, study_lock
from skipsearch.search.fidelity import pruner
from skipsearch.search.integrity import check_study_hashes
from skipsearch.search.proposals import PerTrialSeed
from skipsearch.search.budget import WAIT, Waiting, counted, evaluated, reserve_many
from skipsearch.search.recording import baseline_fid
from skipsearch.search.stored_spec import check_same_science, stored_form, with_operational
from skipsearch.search.trial_steps import Finished
from skipsearch.spec import Spec
from skipsearch.storage import Store, engine_kwargs, urls
from skipsearch.storage.artifacts import artifact_dir, artifact_store
from skipsearch.storage.facts import record_facts

OPTUNA_ATTEMPTS = 8


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


def open_study(spec: Spec, storage: str | None = None, source: str = "spec",
               echo: Callable[[str], None] = tqdm.write) -> StudyContext:
    """Check everything the spec names, then open (or create) the study and join it as a driver. A relative path
    in a spec given as an object is read from the working directory, and stored absolute (``skipsearch.paths``)."""
    spec = spec.anchored(Path.cwd())
    url = urls.choose(storage, spec.storage)
    urls.parse(url)
    resolved = resolve(spec, source)
    for warning in resolved.warnings:
        echo(f"warning: {warning}")
    method = method_for(spec.kind)
    fresh = not artifact_dir(url).is_dir()
    artifacts = artifact_store(url)  # an unwritable artifact folder is refused before the study is stored
    try:
        store = Store(url)
    except BaseException:  # a damaged or read-only database: leave no empty artifact folder behind either
        if fresh:
            with suppress(OSError):
                artifact_dir(url).rmdir()
        raise
    first = store.save_study(spec.name, stored_form(spec))
    check_same_science(spec.name, first, spec)
    store.follow_spec(spec.name, with_operational(first, spec))  # readers judge by this run's plan (confirm.n...)
    hashes = check_study_hashes(store, spec, resolved.hashes)  # the same files as when it was stored
    record_facts(store, spec.name, resolved.info)  # what readers need of the model, which they never load
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_optuna_storage(url)
    study = optuna.create_study(study_name=spec.name, storage=rdb,
                                directions=["minimize"] * len(method.objectives(spec)),
                                sampler=PerTrialSeed(spec.search.sampler, spec.search.seed),
                                pruner=pruner(method.fidelity(spec)), load_if_exists=True)
    ctx = StudyContext(spec=spec, method=method, info=resolved.info, store=store, study=study, storage=rdb,
                       driver=Driver(store, spec.name), echo=echo, artifacts=artifacts, hashes=hashes)
    with study_lock(ctx.driver):
        annotate_study(ctx)
    return ctx


def run_trial(ctx: StudyContext, trial: optuna.trial.Trial, progress: bool = False) -> Finished:
    """One in-process trial: the shared step with K = 1 (``batch_trials.run_batch``)."""
    return run_batch(ctx, [trial], progress)[0]


def trial_line(ctx: StudyContext, done: Finished) -> str:
    if done.rung is None:
        return f"trial {done.number:3d}  {done.state:8s}  {done.reason}"
    r, s = done.rung, done.rung.score
    base = baseline_fid(ctx)
    delta = f"{s.fid - base:+8.4f}" if base is not None and done.state == "COMPLETE" else "        "
    at = f"step {r.step:<5d}" if r.step is not None else ""
    further = "".join(f"  {domain} FID {score.fid:8.4f}" for domain, score in r.references.items())
    shared = f"  {s.evaluations_saved / (s.n * s.nfe):.0%} of NFE from the baseline" if s.evaluations_saved else ""
    return (f"trial {done.number:3d}  {done.state:8s}  {at}N={s.n:<6d} FID {s.fid:8.4f}  dFID {delta}  "
            f"KID {s.kid:.5f}{further}  {r.wall_s:5.1f}s{shared}")


def search(ctx: StudyContext, budget: int, progress: bool = True) -> None:
    """Run trials until the study holds ``budget`` evaluated trials, whichever drivers ran them. ``progress``:
    the study's trials and, within each, its sampling or fine-tuning (``skipsearch.progress``: bars on a
    terminal, lines in a log); False is silent."""
    used, _ = counted(ctx)
    ran, waiting = 0, Waiting(ctx)
    per_batch = trials_per_batch(ctx, budget - used) if budget > used else 1
    if per_batch > 1:
        ctx.echo(f"{per_batch} trials share each network batch (search.batch_trials)")
    with Progress(budget, f"study {ctx.spec.name}", "trials", enabled=progress,
                  initial=evaluated(ctx, budget)) as bar:
        while True:
            ctx.driver.check_heartbeat()
            trials = reserve_many(ctx, budget, per_batch)
            if trials is None:
                break
            if trials == WAIT:
                bar.advance_to(evaluated(ctx, budget))  # other drivers' trials end meanwhile
                waiting()
                continue
            waiting.reset()
            ended = run_batch(ctx, trials, progress=progress)
            for done in ended:
                ran += 1
                ctx.echo(trial_line(ctx, done))
            bar.advance_to(evaluated(ctx, budget))
    if ran == 0:
        say_budget_reached(ctx, counted(ctx)[0], budget)
    else:  # several drivers: each one's last word is the study's state, not only its own share
        ctx.echo(f"done: {evaluated(ctx, budget)}/{budget} trials of study {ctx.spec.name} evaluated, {ran} by this "
                 f"driver")


def say_budget_reached(ctx: StudyContext, used: int, budget: int) -> None:
    ctx.echo(f"trial budget reached ({used}/{budget}); pass --trials to extend the search")
