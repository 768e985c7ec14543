"""The study driver: reserve a trial -> evaluate() -> record. Drivers are the only database writers.

Any number of drivers may share a study (``skipsearch.coordination``). Under the study lock a driver
recovers what dead drivers left, counts the study-wide budget, enqueues the one baseline and asks Optuna for
a trial, which it claims. A trial's row in skipsearch's table is written (one transaction, while the claim
is still held) before Optuna is told, so a driver killed in between leaves a claimed RUNNING trial whose
result is recovered; one with no recorded result is marked FAIL with a reason. With a ladder of sample
counts, each rung is reported to Optuna at step = N; a trial stopped early is PRUNED, and only a trial that
reached the top rung is COMPLETE.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from tqdm.auto import tqdm

from skipsearch import deadline
from skipsearch.coordination import Driver, study_lock, trial_item
from skipsearch.errors import StorageError, UserError
from skipsearch.evaluate import TRIAL_ERRORS, EvalTask, evaluate_ladder
from skipsearch.provenance import versions
from skipsearch.resolve import resolve
from skipsearch.seeding import PerTrialSeed
from skipsearch.space import baseline_params, suggest
from skipsearch.spec import DiffTuningSpec, Spec
from skipsearch.storage import Store, engine_kwargs
from skipsearch.storage import urls

SCIENCE_FIELDS = ("kind", "model", "sampler", "metric", "search.family", "search.rho_range", "search.sigma_range",
                  "search.s_range", "search.s_prime_range", "search.r_range", "search.lam_range", "search.lr_range",
                  "search.steps_range", "search.objectives", *(f"finetune.{f}" for f in (
                      "data", "n_images", "data_seed", "source_reference", "steps", "lr", "batch_size",
                      "eval_steps", "bank_size", "bank_seed", "seed")))
STALE_REASON = "the driver stopped before this trial finished; marked FAIL on resume"
POLL_S = 1.0  # how often a driver waiting on other drivers' trials looks again
OPTUNA_ATTEMPTS = 8
State = optuna.trial.TrialState
WAIT = "wait"  # reserve(): the budget is taken, but trials are still in flight


@dataclass
class StudyContext:
    spec: Spec
    store: Store
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    driver: Driver
    n_skips: int
    echo: Callable[[str], None] = field(default=tqdm.write)

    def task(self, n: int, seed_start: int, rungs: tuple[int, ...] = ()) -> EvalTask:
        m = self.spec.metric
        return EvalTask(self.spec.model.name, self.spec.sampler.config(), m.extractor, m.reference, n, seed_start,
                        m.batch_size, m.kid_subset_size, self.spec.device, rungs)

    @property
    def search_task(self) -> EvalTask:
        return self.task(self.spec.metric.n, self.spec.metric.seed, tuple(self.spec.metric.rungs))

    @property
    def diff_tuning(self) -> bool:
        return isinstance(self.spec, DiffTuningSpec)

    @property
    def multi_objective(self) -> bool:
        return self.diff_tuning and self.spec.search.multi_objective

    def finetune_task(self, n: int, seed_start: int, train_seed: int, eval_steps: tuple[int, ...] = ()):
        from skipsearch.finetuning import FinetuneTask

        m, f = self.spec.metric, self.spec.finetune
        return FinetuneTask(self.spec.model.name, self.spec.sampler.config(), m.extractor, m.reference,
                            f.source_reference, n, seed_start, m.batch_size, m.kid_subset_size, self.spec.device,
                            f.data, f.n_images, f.data_seed, f.batch_size, f.bank_size, f.bank_seed, train_seed,
                            eval_steps)

    def weights_file(self, number: int) -> Path:
        """Absolute, so the database's reference holds from any working directory."""
        return (Path(self.spec.finetune.weights_dir) / self.spec.name / f"trial-{number:04d}.pt").resolve()

    def values(self, fid: float, source_fid: float | None) -> float | list[float]:
        """What Optuna is told: target FID, or (target FID, source FID) in a multi-objective study."""
        return [fid, source_fid] if self.multi_objective else fid

    @property
    def trial_task(self):
        """What a search trial runs: an EvalTask (Skip-Tuning) or a FinetuneTask (Diff-Tuning)."""
        if not self.diff_tuning:
            return self.search_task
        f = self.spec.finetune
        return self.finetune_task(self.spec.metric.n, self.spec.metric.seed, f.seed, f.eval_steps)

    def weights_path(self, number: int) -> Path | None:
        """Where trial ``number`` saves fine-tuned weights (Diff-Tuning only)."""
        return self.weights_file(number) if self.diff_tuning else None

    @property
    def trial_timeout_s(self) -> float | None:
        return self.spec.search.trial_timeout_s

    def close(self) -> None:
        """This driver leaves the study (other drivers no longer wait for it)."""
        self.driver.stop()
        self.store.close()


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
                secret = urls.password(url)
                text = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
                raise StorageError(f"cannot open Optuna's storage in {urls.shown(url)}: "
                                   f"{text.replace(secret, '***') if secret else text}") from None
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


def _row(ctx: StudyContext, number: int, role: str, coefficients_json: str) -> dict:
    task = ctx.search_task
    return dict(study_name=ctx.spec.name, trial_number=number, role=role, coefficients_json=coefficients_json,
                n=task.n, seed_start=task.seed_start, sampler_json=json.dumps(ctx.spec.sampler.model_dump()),
                nfe=task.sampler.nfe, model_id=task.model, extractor=task.extractor,
                versions_json=json.dumps(versions()))


def _trial_id(ctx: StudyContext, number: int) -> int:
    study_id = ctx.storage.get_study_id_from_name(ctx.spec.name)
    return ctx.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def record_rung(ctx: StudyContext, trial: optuna.trial.Trial, result: dict) -> None:
    """An intermediate FID at step = N (or at the fine-tuning step), in Optuna and in skipsearch's tables."""
    if "step" not in result:
        trial.report(result["fid"], step=result["n"])
        ctx.store.record_rung(study_name=ctx.spec.name, trial_number=trial.number, n=result["n"],
                              fid=result["fid"], kid=result["kid"], wall_s=result["wall_s"])
        return
    if not ctx.multi_objective:  # Optuna keeps no intermediate values for multi-objective trials
        trial.report(result["fid"], step=result["step"])
    ctx.store.record_step(study_name=ctx.spec.name, trial_number=trial.number, step=result["step"], n=result["n"],
                          fid=result["fid"], kid=result["kid"], source_fid=result.get("source_fid"),
                          source_kid=result.get("source_kid"), wall_s=result["wall_s"])


DIFF_TUNING_COLUMNS = ("source_fid", "source_kid", "weights_path", "weights_hash")
LOST = "LOST"  # another driver took this trial over (this one was presumed dead); its result is not recorded


def record_result(ctx: StudyContext, number: int, role: str, coefficients_json: str, result: dict) -> str:
    """COMPLETE if the top rung was reached, else PRUNED (its last rung's numbers, at that N)."""
    state = "COMPLETE" if result.get("final", result["n"] >= ctx.spec.metric.n) else "PRUNED"
    base = result["fid"] if role == "baseline" else baseline_fid(ctx)
    delta = None if base is None or state != "COMPLETE" else result["fid"] - base
    return _record(ctx, number, _row(ctx, number, role, coefficients_json) | dict(
        n=result["n"], state=state, fid=result["fid"], kid=result["kid"], kid_std=result["kid_std"],
        delta_fid=delta, model_hash=result["model_hash"], ref_hash=result["ref_hash"], wall_s=result["wall_s"],
        evaluated=True, **{k: result.get(k) for k in DIFF_TUNING_COLUMNS}))


def record_failure(ctx: StudyContext, number: int, role: str, coefficients_json: str, reason: str,
                   evaluated: bool = True) -> None:
    """FAIL with its reason. ``evaluated=False`` (killed, interrupted, stopped by a bug) keeps it out of the
    trial budget."""
    _record(ctx, number, _row(ctx, number, role, coefficients_json) | dict(state="FAIL", error=reason,
                                                                            evaluated=evaluated))


def _record(ctx: StudyContext, number: int, row: dict) -> str:
    """Write the row while this driver still holds the trial's claim, tell Optuna, then drop the claim."""
    item = trial_item(number)
    if not ctx.store.record_trial(claim=(item, ctx.driver.id), **row):
        ctx.echo(f"trial {number}: another driver recovered it while this one ran it (no heartbeat for too "
                 f"long?); this result is discarded")
        return LOST
    _tell(ctx, number, row)
    ctx.store.release(ctx.spec.name, item, ctx.driver.id)
    return row["state"]


def _tell(ctx: StudyContext, number: int, row: dict) -> None:
    """Tell Optuna what skipsearch's row says (once: a trial already finished is left as it is)."""
    trial_id = _trial_id(ctx, number)
    if ctx.storage.get_trial(trial_id).state.is_finished():
        return
    with suppress(optuna.exceptions.UpdateFinishedTrialError):  # another driver finished it a moment ago
        if row["state"] == "COMPLETE":
            ctx.storage.set_trial_user_attr(trial_id, "delta_fid", row["delta_fid"])
            if row.get("weights_path"):
                ctx.storage.set_trial_user_attr(trial_id, "weights_path", row["weights_path"])
            ctx.study.tell(number, ctx.values(row["fid"], row.get("source_fid")), skip_if_finished=True)
            if row["role"] == "baseline":  # trials finished before the baseline (in parallel) get their dFID now
                ctx.store.fill_missing_deltas(ctx.spec.name, row["fid"])
        elif row["state"] == "PRUNED":
            ctx.study.tell(number, state=State.PRUNED, skip_if_finished=True)
        else:
            ctx.storage.set_trial_user_attr(trial_id, "fail_reason", row.get("error") or "")
            ctx.storage.set_trial_user_attr(trial_id, "evaluated", row.get("evaluated") is not False)
            ctx.study.tell(number, state=State.FAIL, skip_if_finished=True)


def recover_stale(ctx: StudyContext) -> list[int]:
    """Finish every RUNNING trial whose driver is gone: from its recorded row, else as FAIL (not counted).
    Called under the study lock, so a RUNNING trial without a claim cannot belong to a live driver; this
    driver takes the claim over and finishes the trial as its own."""
    name, touched, alive = ctx.spec.name, [], {}
    claims = {c["trial_number"]: c for c in ctx.store.claims(name, "trial:")}

    def gone(driver_id: str) -> bool:
        if driver_id not in alive:
            alive[driver_id] = ctx.driver.alive(driver_id)
        return not alive[driver_id]

    for t in ctx.study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        claim = claims.pop(t.number, None)
        if claim is not None and not gone(claim["driver_id"]):
            continue
        touched.append(t.number)
        item = trial_item(t.number)
        if claim is not None:
            ctx.store.release(name, item, claim["driver_id"])
        ctx.store.try_claim(name, item, ctx.driver.id, t.number)
        row = ctx.store.trial(name, t.number)
        if row is not None:
            _tell(ctx, t.number, row)
            ctx.store.release(name, item, ctx.driver.id)
            continue
        try:
            coefficients_json = suggest(optuna.trial.FixedTrial(t.params), ctx.spec, ctx.n_skips).model_dump_json()
        except (ValueError, UserError):  # killed before its parameters were all drawn
            coefficients_json = json.dumps({"incomplete_params": t.params})
        record_failure(ctx, t.number, t.user_attrs.get("role", "search"), coefficients_json, STALE_REASON,
                       evaluated=False)
    for number, claim in claims.items():  # finished trials whose dead driver never dropped the claim
        if gone(claim["driver_id"]):
            ctx.store.release(name, trial_item(number), claim["driver_id"])
    if touched:
        ctx.echo(f"recovered {len(touched)} trial(s) that a stopped driver left RUNNING: {touched}")
    return touched


def _baseline_trial(trials) -> optuna.trial.FrozenTrial | None:
    for t in trials:
        if t.user_attrs.get("role") == "baseline" and t.state not in (State.FAIL, State.PRUNED):
            return t
    return None


def ensure_baseline(ctx: StudyContext, trials=None) -> None:
    """Exactly one live baseline (waiting, running or complete) in the study; under the study lock."""
    if _baseline_trial(trials if trials is not None else ctx.study.get_trials(deepcopy=False)) is None:
        ctx.study.enqueue_trial(baseline_params(ctx.spec, ctx.n_skips), user_attrs={"role": "baseline"},
                                skip_if_exists=False)


def baseline_fid(ctx: StudyContext) -> float | None:
    t = _baseline_trial(ctx.study.get_trials(deepcopy=False))
    row = ctx.store.trial(ctx.spec.name, t.number) if t is not None else None
    return row["fid"] if row and row["state"] == "COMPLETE" else None


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
        reason = str(err) if str(err).startswith("timeout") else f"{type(err).__name__}: {err}"
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
        ctx.echo(f"trial budget reached ({counted(ctx)[0]}/{budget}); pass --trials to extend the search")
