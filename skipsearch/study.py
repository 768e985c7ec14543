"""The study driver: Optuna ask -> evaluate() -> record, then held-out confirmation of the top-k.

The driver is the only database writer. A trial's row in skipsearch's table is written (one transaction)
before Optuna is told, so a driver killed in between leaves a RUNNING trial whose result is recovered on
resume; a RUNNING trial with no recorded result is marked FAIL with a reason.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

import optuna
import pandas as pd
import torch
from tqdm.auto import tqdm

from skipsearch.errors import UserError
from skipsearch.evaluate import EvalResult, EvalTask, SampleError, evaluate, evaluator
from skipsearch.provenance import versions
from skipsearch.skip import _Schedule
from skipsearch.space import baseline_params, make_sampler, suggest
from skipsearch.spec import Spec
from skipsearch.storage import Store, engine_kwargs

log = logging.getLogger("skipsearch")
SCIENCE_FIELDS = ("kind", "model", "sampler", "metric", "search.family", "search.rho_range", "search.sigma_range")
STALE_REASON = "the driver stopped before this trial finished; marked FAIL on resume"
TRIAL_ERRORS = (SampleError, FloatingPointError, RuntimeError, ValueError)


@dataclass
class StudyContext:
    spec: Spec
    store: Store
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    device: str

    def task(self, n: int, seed_start: int) -> EvalTask:
        m = self.spec.metric
        return EvalTask(self.spec.model.name, self.spec.sampler.config(), m.extractor, m.reference, n, seed_start,
                        m.batch_size, m.kid_subset_size, self.device)

    @property
    def search_task(self) -> EvalTask:
        return self.task(self.spec.metric.n, self.spec.metric.seed)

    @property
    def n_skips(self) -> int:
        t = self.search_task
        return evaluator(t.model, t.extractor, t.dataset, t.device).loaded.info.n_skips


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("the spec asks for device: cuda, but no CUDA device is visible (use cpu or auto)")
    return device


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


def open_study(spec: Spec, storage: str | None = None) -> StudyContext:
    url = storage or spec.storage
    store = Store(url)
    first = store.save_study(spec.name, spec.model_dump(mode="json"))
    check_same_science(spec.name, first, spec.model_dump(mode="json"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_obj = open_optuna_storage(url)
    study = optuna.create_study(study_name=spec.name, storage=storage_obj, direction="minimize",
                                sampler=make_sampler(spec.search), load_if_exists=True)
    return StudyContext(spec, store, study, storage_obj, resolve_device(spec.device))


def recover_stale(ctx: StudyContext) -> list[int]:
    """Finish every RUNNING trial a killed driver left: from its recorded result, else as FAIL."""
    touched = []
    for t in ctx.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        row = ctx.store.trial(ctx.spec.name, t.number)
        if row is not None and row["state"] == "COMPLETE":
            ctx.study.tell(t.number, row["fid"])
            continue
        if row is None:
            values = _row(ctx, t.number, t.user_attrs.get("role", "search"), None, ctx.search_task)
            try:
                coeffs = suggest(optuna.trial.FixedTrial(t.params), ctx.spec.search, ctx.n_skips)
                values["coefficients_json"] = coeffs.model_dump_json()
            except ValueError:  # killed before its parameters were all drawn
                values["coefficients_json"] = json.dumps({"incomplete_params": t.params})
            ctx.store.record_trial(**values, state="FAIL", error=STALE_REASON)
        ctx.storage.set_trial_user_attr(t._trial_id, "fail_reason", STALE_REASON)
        ctx.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        touched.append(t.number)
    return touched


def _baseline_trial(ctx: StudyContext) -> optuna.trial.FrozenTrial | None:
    for t in ctx.study.get_trials(deepcopy=False):
        if t.user_attrs.get("role") == "baseline" and t.state != optuna.trial.TrialState.FAIL:
            return t
    return None


def ensure_baseline(ctx: StudyContext) -> None:
    if _baseline_trial(ctx) is None:
        ctx.study.enqueue_trial(baseline_params(ctx.spec.search, ctx.n_skips), user_attrs={"role": "baseline"},
                                skip_if_exists=False)


def baseline_fid(ctx: StudyContext) -> float | None:
    t = _baseline_trial(ctx)
    row = ctx.store.trial(ctx.spec.name, t.number) if t is not None else None
    return row["fid"] if row and row["state"] == "COMPLETE" else None


def _row(ctx: StudyContext, number: int, role: str, coeffs: _Schedule | None, task: EvalTask) -> dict:
    coefficients_json = coeffs.model_dump_json() if coeffs is not None else "{}"
    return dict(study_name=ctx.spec.name, trial_number=number, role=role, coefficients_json=coefficients_json,
                n=task.n, seed_start=task.seed_start, sampler_json=json.dumps(ctx.spec.sampler.model_dump()),
                nfe=task.sampler.nfe, model_id=task.model, extractor=task.extractor,
                versions_json=json.dumps(versions()))


def run_trial(ctx: StudyContext, progress: bool = False) -> tuple[int, EvalResult | None, str | None]:
    trial = ctx.study.ask()
    role = trial.user_attrs.get("role", "search")
    task = ctx.search_task
    coeffs = suggest(trial, ctx.spec.search, ctx.n_skips)
    row = _row(ctx, trial.number, role, coeffs, task)
    try:
        result = evaluate(task, coeffs, progress=progress)
    except TRIAL_ERRORS as err:
        reason = f"{type(err).__name__}: {err}"
        ctx.store.record_trial(**row, state="FAIL", error=reason)
        trial.set_user_attr("fail_reason", reason)
        ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return trial.number, None, reason
    except BaseException as err:  # interrupted: record why, then let the interrupt through
        reason = f"interrupted ({type(err).__name__}) before the trial finished"
        ctx.store.record_trial(**row, state="FAIL", error=reason)
        trial.set_user_attr("fail_reason", reason)
        ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    base = result.fid if role == "baseline" else baseline_fid(ctx)
    delta = None if base is None else result.fid - base
    ctx.store.record_trial(**row, state="COMPLETE", fid=result.fid, kid=result.kid, kid_std=result.kid_std,
                           delta_fid=delta, model_hash=result.model_hash, ref_hash=result.ref_hash,
                           wall_s=result.wall_s)
    trial.set_user_attr("delta_fid", delta)
    trial.set_user_attr("extractor", result.extractor)
    ctx.study.tell(trial, result.fid)
    return trial.number, result, None


def finished_count(ctx: StudyContext) -> int:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return len(ctx.study.get_trials(deepcopy=False, states=done))


def search(ctx: StudyContext, budget: int, echo=tqdm.write) -> None:
    recovered = recover_stale(ctx)
    if recovered:
        echo(f"recovered {len(recovered)} trial(s) a stopped run left RUNNING: {recovered}")
    ensure_baseline(ctx)
    todo = max(0, budget - finished_count(ctx))
    if todo == 0:
        echo(f"trial budget reached ({finished_count(ctx)}/{budget}); pass --trials to extend the search")
    bar = tqdm(total=todo, desc=f"study {ctx.spec.name}", unit="trial", file=sys.stderr, disable=None)
    for _ in range(todo):
        number, result, reason = run_trial(ctx, progress=not bar.disable)
        bar.update()
        if result is None:
            echo(f"trial {number:3d}  FAIL  {reason}")
            continue
        base = baseline_fid(ctx)
        delta = f"{result.fid - base:+8.4f}" if base is not None else "     n/a"
        echo(f"trial {number:3d}  FID {result.fid:8.4f}  dFID {delta}  KID {result.kid:.5f}  {result.wall_s:5.1f}s")
    bar.close()


def candidates(ctx: StudyContext) -> list[int]:
    """The baseline and the top-k completed search trials by search FID."""
    frame = ctx.store.trials_frame(ctx.spec.name)
    done = frame[frame.state == "COMPLETE"]
    base = done[done.role == "baseline"].trial_number.tolist()
    top = done[done.role == "search"].sort_values("fid").head(ctx.spec.confirm.top_k).trial_number.tolist()
    return base[:1] + top


def confirm(ctx: StudyContext) -> pd.DataFrame:
    """Re-evaluate the candidates at the larger N on held-out seed sets; already stored runs are reused."""
    c = ctx.spec.confirm
    have = ctx.store.confirmations_frame(ctx.spec.name)
    have = have[have.n == c.n]
    todo = [(num, j) for num in candidates(ctx) for j in range(c.seed_sets)
            if have[(have.trial_number == num) & (have.seed_set == j)].empty]
    for num, j in tqdm(todo, desc="held-out confirmation", unit="eval", file=sys.stderr, disable=None):
        row = ctx.store.trial(ctx.spec.name, num)
        coeffs = coefficients_of(row)
        task = ctx.task(c.n, c.seed + j * c.n)
        result = evaluate(task, coeffs)
        ctx.store.record_confirmation(study_name=ctx.spec.name, trial_number=num, seed_set=j,
                                      seed_start=task.seed_start, n=c.n, fid=result.fid, kid=result.kid,
                                      kid_std=result.kid_std, extractor=result.extractor, ref_hash=result.ref_hash,
                                      wall_s=result.wall_s)
    table = confirmation_table(ctx.store, ctx.spec.name, c.n)
    if not table.empty:
        winner = table[table.role != "baseline"].sort_values("heldout_fid").head(1)
        if not winner.empty:
            ctx.store.set_winner(ctx.spec.name, int(winner.trial_number.iloc[0]))
    return table


def coefficients_of(row: dict) -> _Schedule:
    from pydantic import TypeAdapter

    from skipsearch.skip import SkipSchedule

    return TypeAdapter(SkipSchedule).validate_json(row["coefficients_json"])


def confirmation_table(store: Store, study: str, n: int | None = None) -> pd.DataFrame:
    """One row per confirmed trial: mean held-out FID, and dFID against the baseline paired by seed set."""
    conf, trials = store.confirmations_frame(study), store.trials_frame(study)
    if n is not None:
        conf = conf[conf.n == n]
    if conf.empty or trials.empty:
        return pd.DataFrame()
    roles = trials.set_index("trial_number").role
    base_nums = [t for t in conf.trial_number.unique() if roles.get(t) == "baseline"]
    if not base_nums:
        return pd.DataFrame()
    base = conf[conf.trial_number == base_nums[0]].set_index("seed_set").fid
    rows = []
    for num, group in conf.groupby("trial_number"):
        g = group.set_index("seed_set")
        delta = (g.fid - base.reindex(g.index)).dropna()
        search = trials[trials.trial_number == num].iloc[0]
        rows.append(dict(trial_number=int(num), role=roles.get(num), search_fid=search.fid, search_kid=search.kid,
                         heldout_fid=g.fid.mean(), heldout_fid_std=g.fid.std(ddof=1) if len(g) > 1 else 0.0,
                         heldout_kid=g.kid.mean(), delta_fid=delta.mean(),
                         delta_fid_std=delta.std(ddof=1) if len(delta) > 1 else 0.0, lower_on=int((delta < 0).sum()),
                         seed_sets=len(g),
                         n=int(g.n.iloc[0]), coefficients=search.coefficients_json))
    return pd.DataFrame(rows).sort_values(["role", "heldout_fid"]).reset_index(drop=True)
