"""What a driver writes for a trial: its rungs, its result or failure, and what dead drivers left.

A trial's row in skipsearch's table is written (one transaction, while this driver still holds the
trial's claim) before Optuna is told, and the claim is dropped only after: a driver killed in between
leaves a claimed RUNNING trial whose result the next driver finishes from the row (``recover_stale``).
A trial with no recorded row is marked FAIL with a reason, and does not count towards the budget.
"""

from __future__ import annotations

import json
from contextlib import suppress

import optuna

from skipsearch.context import StudyContext
from skipsearch.coordination import trial_item
from skipsearch.errors import UserError
from skipsearch.provenance import versions
from skipsearch.space import suggest

STALE_REASON = "the driver stopped before this trial finished; marked FAIL on resume"
State = optuna.trial.TrialState


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


def baseline_trial(trials) -> optuna.trial.FrozenTrial | None:
    for t in trials:
        if t.user_attrs.get("role") == "baseline" and t.state not in (State.FAIL, State.PRUNED):
            return t
    return None


def baseline_fid(ctx: StudyContext) -> float | None:
    t = baseline_trial(ctx.study.get_trials(deepcopy=False))
    row = ctx.store.trial(ctx.spec.name, t.number) if t is not None else None
    return row["fid"] if row and row["state"] == "COMPLETE" else None
