"""The study driver: reserve a trial -> the method's trial -> record (``recording``).

Any number of drivers may share a study (``coordination``). Under the study lock a driver
recovers what dead drivers left, counts the study-wide budget, enqueues the one baseline and asks Optuna for
a trial, which it claims. With a ladder of sample counts, each rung is reported to Optuna at step = N; a
trial stopped early is PRUNED, and only a trial that reached the top rung is COMPLETE.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import optuna
from sqlalchemy.exc import SQLAlchemyError
from tqdm.auto import tqdm

from skipsearch import deadline
from skipsearch.errors import StorageError, Terminated, UserError
from skipsearch.evaluate import TRIAL_ERRORS, failure_reason
from skipsearch.files import machine_failure
from skipsearch.methods import Coefficients, method_for
from skipsearch.progress import Progress
from skipsearch.resolve import resolve
from skipsearch.results import Rung
from skipsearch.search.annotations import annotate_study
from skipsearch.search.batched import run_batch, trials_per_batch
from skipsearch.search.context import StudyContext
from skipsearch.search.coordination import Driver, study_lock, trial_item
from skipsearch.search.fidelity import pruner
from skipsearch.search.integrity import check_study_hashes
from skipsearch.search.proposals import PerTrialSeed
from skipsearch.search.recording import (baseline_fid, baseline_trial, record_failure, record_result, record_rung,
                                         recover_stale, settle)
from skipsearch.spec import Spec, changed_science
from skipsearch.storage import Store, engine_kwargs, urls
from skipsearch.storage.artifacts import artifact_dir, artifact_store
from skipsearch.storage.facts import record_facts

POLL_S = 1.0  # how often a driver waiting on other drivers' trials looks again
OPTUNA_ATTEMPTS = 8
WAIT = "wait"  # reserve(): the budget is taken, but trials are still in flight


def trial_ladder(spec: Spec, coefficients: Coefficients, artifact: Path | None = None,
                 progress: bool = False) -> Iterator[Rung]:
    """A trial's rungs, from its method: the one path for in-process and Ray trials. Past
    ``search.trial_timeout_s`` the trial raises TrialTimeout at its next network evaluation or training step;
    closing the iterator early (a pruned trial) undoes what the method applied."""
    with deadline.limit(spec.search.trial_timeout_s):
        rungs = method_for(spec.kind).trial(spec, coefficients, artifact, progress)
        try:
            yield from rungs
        finally:
            rungs.close()


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


def check_same_science(name: str, first: dict, now: Spec) -> None:
    """A study's numbers are only comparable if the fields that decide them never change (``spec.science``)."""
    changed = changed_science(first, now)
    if changed:
        raise UserError(f"study {name!r} exists with a different {', '.join(changed)}; its trials would not be "
                        f"comparable. Use a new study name, or restore the original values.")


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


def run_trial(ctx: StudyContext, trial: optuna.trial.Trial, progress: bool = False) -> Finished:
    """One in-process trial."""
    role, coeffs = ask(ctx, trial)
    cj, result = coeffs.model_dump_json(), None
    ladder = trial_ladder(ctx.spec, coeffs, ctx.method.artifact(ctx.spec, trial.number), progress)
    try:
        for result in ladder:
            record_rung(ctx, trial, result)
            if role != "baseline" and not ctx.multi_objective and trial.should_prune():
                break
    except TRIAL_ERRORS as err:
        reason = failure_reason(err)
        record_failure(ctx, trial.number, role, cj, reason)
        return Finished(number=trial.number, state="FAIL", reason=reason)
    except BaseException as err:  # interrupted, a user mistake or full disk found late, or a bug: record why
        stopped(ctx, trial.number, role, cj, err)
        raise
    finally:
        ladder.close()
    try:
        state = record_result(ctx, trial.number, role, cj, result)
    except BaseException as err:  # cut short while recording (SIGTERM, a failed write): settled, then re-raised
        stopped(ctx, trial.number, role, cj, err)
        raise
    return Finished(number=trial.number, state=state, rung=result)


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


def trial_line(ctx: StudyContext, done: Finished) -> str:
    if done.rung is None:
        return f"trial {done.number:3d}  {done.state:8s}  {done.reason}"
    r, s = done.rung, done.rung.score
    base = baseline_fid(ctx)
    delta = f"{s.fid - base:+8.4f}" if base is not None and done.state == "COMPLETE" else "        "
    at = f"step {r.step:<5d}" if r.step is not None else ""
    source = f"  source FID {r.source.fid:8.4f}" if r.source is not None else ""
    shared = f"  {s.evaluations_saved / (s.n * s.nfe):.0%} of NFE from the baseline" if s.evaluations_saved else ""
    return (f"trial {done.number:3d}  {done.state:8s}  {at}N={s.n:<6d} FID {s.fid:8.4f}  dFID {delta}  "
            f"KID {s.kid:.5f}{source}  {r.wall_s:5.1f}s{shared}")


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
            ended = (run_batch(ctx, trials, progress=progress) if len(trials) > 1
                     else [run_trial(ctx, trials[0], progress=progress)])
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
