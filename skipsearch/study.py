"""The study driver: Optuna ask -> evaluate() -> record. The only database writer.

A trial's row in skipsearch's table is written (one transaction) before Optuna is told, so a driver killed
in between leaves a RUNNING trial whose result is recovered on resume; a RUNNING trial with no recorded
result is marked FAIL with a reason. With a ladder of sample counts, each rung is reported to Optuna at
step = N; a trial stopped early is PRUNED, and only a trial that reached the top rung is COMPLETE.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from pydantic import BaseModel
from tqdm.auto import tqdm

from skipsearch.errors import UserError
from skipsearch.evaluate import TRIAL_ERRORS, EvalTask, evaluate_ladder, evaluator
from skipsearch.provenance import versions
from skipsearch.space import baseline_params, make_sampler, suggest
from skipsearch.spec import DiffTuningSpec, Spec
from skipsearch.storage import Store, engine_kwargs

SCIENCE_FIELDS = ("kind", "model", "sampler", "metric", "search.family", "search.rho_range", "search.sigma_range",
                  "search.s_range", "search.s_prime_range", "search.r_range", "search.lam_range", "search.lr_range",
                  "search.steps_range", "search.objectives", *(f"finetune.{f}" for f in (
                      "data", "n_images", "data_seed", "source_reference", "steps", "lr", "batch_size",
                      "eval_steps", "bank_size", "bank_seed", "seed")))
STALE_REASON = "the driver stopped before this trial finished; marked FAIL on resume"
State = optuna.trial.TrialState


@dataclass
class StudyContext:
    spec: Spec
    store: Store
    study: optuna.Study
    storage: optuna.storages.RDBStorage

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
    def n_skips(self) -> int:
        if self.diff_tuning:
            return 0
        t = self.search_task
        return evaluator(t.model, t.extractor, t.dataset, t.device).loaded.info.n_skips


def trial_ladder(task, coefficients: BaseModel, weights_path: Path | None = None,
                 progress: bool = False) -> Iterator[dict]:
    """A trial's results as dicts, one per rung: sample counts for an EvalTask (Skip-Tuning), fine-tuning
    steps for a FinetuneTask (Diff-Tuning). The one path for in-process and Ray trials."""
    from skipsearch.finetuning import FinetuneTask, finetune_ladder

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
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))


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


def open_study(spec: Spec, storage: str | None = None) -> StudyContext:
    url = storage or spec.storage
    store = Store(url)
    first = store.save_study(spec.name, spec.model_dump(mode="json"))
    check_same_science(spec.name, first, spec.model_dump(mode="json"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_optuna_storage(url)
    n_obj = len(spec.search.objectives) if isinstance(spec, DiffTuningSpec) else 1
    study = optuna.create_study(study_name=spec.name, storage=rdb, directions=["minimize"] * n_obj,
                                sampler=make_sampler(spec.search), pruner=make_pruner(spec), load_if_exists=True)
    return StudyContext(spec, store, study, rdb)


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


def record_result(ctx: StudyContext, number: int, role: str, coefficients_json: str, result: dict) -> str:
    """COMPLETE if the top rung was reached, else PRUNED (its last rung's numbers, at that N)."""
    state = "COMPLETE" if result.get("final", result["n"] >= ctx.spec.metric.n) else "PRUNED"
    base = result["fid"] if role == "baseline" else baseline_fid(ctx)
    delta = None if base is None or state != "COMPLETE" else result["fid"] - base
    row = _row(ctx, number, role, coefficients_json) | {"n": result["n"]}
    ctx.store.record_trial(**row, state=state, fid=result["fid"], kid=result["kid"], kid_std=result["kid_std"],
                           delta_fid=delta, model_hash=result["model_hash"], ref_hash=result["ref_hash"],
                           wall_s=result["wall_s"], **{k: result.get(k) for k in DIFF_TUNING_COLUMNS})
    if state == "COMPLETE":
        trial_id = _trial_id(ctx, number)
        ctx.storage.set_trial_user_attr(trial_id, "delta_fid", delta)
        if result.get("weights_path"):
            ctx.storage.set_trial_user_attr(trial_id, "weights_path", result["weights_path"])
        ctx.study.tell(number, ctx.values(result["fid"], result.get("source_fid")))
        if role == "baseline":  # trials that finished before the baseline (in parallel) get their dFID now;
            ctx.store.fill_missing_deltas(ctx.spec.name, result["fid"])  # finished Optuna trials are read-only
    else:
        ctx.study.tell(number, state=State.PRUNED)
    return state


def record_failure(ctx: StudyContext, number: int, role: str, coefficients_json: str, reason: str,
                   evaluated: bool = True) -> None:
    """FAIL with its reason. ``evaluated=False`` (killed or interrupted) keeps it out of the trial budget."""
    ctx.store.record_trial(**_row(ctx, number, role, coefficients_json), state="FAIL", error=reason)
    ctx.storage.set_trial_user_attr(_trial_id(ctx, number), "fail_reason", reason)
    ctx.storage.set_trial_user_attr(_trial_id(ctx, number), "evaluated", evaluated)
    ctx.study.tell(number, state=State.FAIL)


def recover_stale(ctx: StudyContext) -> list[int]:
    """Finish every RUNNING trial a killed driver left: from its recorded row, else as FAIL."""
    touched = []
    for t in ctx.study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        touched.append(t.number)
        row = ctx.store.trial(ctx.spec.name, t.number)
        if row is not None:
            if row["state"] == "COMPLETE":
                ctx.study.tell(t.number, ctx.values(row["fid"], row["source_fid"]))
            else:
                ctx.study.tell(t.number, state=State[row["state"]])
            continue
        try:
            coefficients_json = suggest(optuna.trial.FixedTrial(t.params), ctx.spec,
                                        ctx.n_skips).model_dump_json()
        except ValueError:  # killed before its parameters were all drawn
            coefficients_json = json.dumps({"incomplete_params": t.params})
        record_failure(ctx, t.number, t.user_attrs.get("role", "search"), coefficients_json, STALE_REASON,
                       evaluated=False)
    return touched


def _baseline_trial(ctx: StudyContext) -> optuna.trial.FrozenTrial | None:
    for t in ctx.study.get_trials(deepcopy=False):
        if t.user_attrs.get("role") == "baseline" and t.state not in (State.FAIL, State.PRUNED):
            return t
    return None


def ensure_baseline(ctx: StudyContext) -> None:
    if _baseline_trial(ctx) is None:
        ctx.study.enqueue_trial(baseline_params(ctx.spec, ctx.n_skips), user_attrs={"role": "baseline"},
                                skip_if_exists=False)


def baseline_fid(ctx: StudyContext) -> float | None:
    t = _baseline_trial(ctx)
    row = ctx.store.trial(ctx.spec.name, t.number) if t is not None else None
    return row["fid"] if row and row["state"] == "COMPLETE" else None


def ask(ctx: StudyContext) -> tuple[optuna.trial.Trial, str, BaseModel]:
    trial = ctx.study.ask()
    return trial, trial.user_attrs.get("role", "search"), suggest(trial, ctx.spec, ctx.n_skips)


def run_trial(ctx: StudyContext, progress: bool = False) -> tuple[int, str, dict | None, str | None]:
    """One in-process trial: (number, state, last result, failure reason)."""
    trial, role, coeffs = ask(ctx)
    cj, result = coeffs.model_dump_json(), None
    ladder = trial_ladder(ctx.trial_task, coeffs, ctx.weights_path(trial.number), progress)
    try:
        for result in ladder:
            record_rung(ctx, trial, result)
            if role != "baseline" and not ctx.multi_objective and trial.should_prune():
                break
    except TRIAL_ERRORS as err:
        record_failure(ctx, trial.number, role, cj, f"{type(err).__name__}: {err}")
        return trial.number, "FAIL", None, f"{type(err).__name__}: {err}"
    except BaseException as err:  # interrupted: record why, then let the interrupt through
        record_failure(ctx, trial.number, role, cj, f"interrupted ({type(err).__name__}) before the trial finished",
                       evaluated=False)
        raise
    finally:
        ladder.close()
    return trial.number, record_result(ctx, trial.number, role, cj, result), result, None


def finished_count(ctx: StudyContext) -> int:
    """Trials that count towards the budget: evaluated ones, failed or not (a killed run's do not)."""
    trials = ctx.study.get_trials(deepcopy=False, states=(State.COMPLETE, State.FAIL, State.PRUNED))
    return sum(t.user_attrs.get("evaluated", True) for t in trials)


def trial_line(ctx: StudyContext, number: int, state: str, result: dict | None, reason: str | None) -> str:
    if state == "FAIL":
        return f"trial {number:3d}  FAIL      {reason}"
    base = baseline_fid(ctx)
    delta = f"{result['fid'] - base:+8.4f}" if base is not None and state == "COMPLETE" else "        "
    at = f"step {result['step']:<5d}" if "step" in result else ""
    source = f"  source FID {result['source_fid']:8.4f}" if result.get("source_fid") is not None else ""
    return (f"trial {number:3d}  {state:8s}  {at}N={result['n']:<6d} FID {result['fid']:8.4f}  dFID {delta}  "
            f"KID {result['kid']:.5f}{source}  {result['wall_s']:5.1f}s")


def prepare(ctx: StudyContext, budget: int, echo=tqdm.write) -> int:
    """Recover what a stopped run left, enqueue the baseline; return how many trials are still to run."""
    recovered = recover_stale(ctx)
    if recovered:
        echo(f"recovered {len(recovered)} trial(s) a stopped run left RUNNING: {recovered}")
    ensure_baseline(ctx)
    todo = max(0, budget - finished_count(ctx))
    if todo == 0:
        echo(f"trial budget reached ({finished_count(ctx)}/{budget}); pass --trials to extend the search")
    return todo


def search(ctx: StudyContext, budget: int, echo=tqdm.write) -> None:
    todo = prepare(ctx, budget, echo)
    bar = tqdm(total=todo, desc=f"study {ctx.spec.name}", unit="trial", file=sys.stderr, disable=None)
    for _ in range(todo):
        number, state, result, reason = run_trial(ctx, progress=not bar.disable)
        bar.update()
        echo(trial_line(ctx, number, state, result, reason))
    bar.close()
