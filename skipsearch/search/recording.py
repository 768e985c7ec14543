"""What a driver writes for a trial: its rungs, its result or failure, and what dead drivers left.

A trial's row in skipsearch's table is written (one transaction, while this driver still holds the
trial's claim) before Optuna is told, and the claim is dropped only after: a driver killed in between
leaves a claimed RUNNING trial whose result the next driver finishes from the row (``recover_stale``).
A trial with no recorded row is marked FAIL with a reason, and does not count towards the budget.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace

import optuna

from skipsearch.errors import FileWriteError, UserError
from skipsearch.package_versions import versions
from skipsearch.files import machine_failure
from skipsearch.results import Measurement, Rung, Score
from skipsearch.search.annotations import annotate_baseline, annotate_trial
from skipsearch.search.context import StudyContext
from skipsearch.search.coordination import trial_item
from skipsearch.search.integrity import check_scores
from skipsearch.storage.artifacts import ARTIFACTS_ENV
from skipsearch.storage.records import RungRow, StepRow, TrialRow, number_column, references_of

STALE_REASON = "the driver stopped before this trial finished; marked FAIL on resume"
LOST = "LOST"  # another driver took this trial over (this one was presumed dead); its result is not recorded
State = optuna.trial.TrialState


def _row(ctx: StudyContext, number: int, role: str, coefficients_json: str, **values) -> TrialRow:
    """A trial's row: what every trial records (the search's N and seeds, sampler, model, extractor,
    versions), and ``values``."""
    spec = ctx.spec
    sampler = spec.sampler.config()
    return TrialRow(study_name=spec.name, trial_number=number, role=role, coefficients_json=coefficients_json,
                    n=values.pop("n", spec.metric.n), seed_start=spec.metric.seed,
                    sampler_json=json.dumps(spec.sampler.model_dump()), nfe=sampler.nfe, model_id=spec.model.model_id,
                    extractor=spec.metric.extractor, versions_json=json.dumps(versions()), **values)


def _trial_id(ctx: StudyContext, number: int) -> int:
    study_id = ctx.storage.get_study_id_from_name(ctx.spec.name)
    return ctx.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def record_rung(ctx: StudyContext, trial: optuna.trial.Trial, rung: Rung) -> None:
    """An intermediate FID at step = progress (N, or the training step), in Optuna and in skipsearch's tables."""
    s = rung.score
    check_scores(ctx.spec, ctx.hashes, s, rung.references, f"trial {trial.number}")  # never another model's or data's
    if not ctx.multi_objective:  # Optuna keeps no intermediate values for multi-objective trials
        trial.report(s.fid, step=rung.progress)
    common = dict(study_name=ctx.spec.name, trial_number=trial.number, n=s.n, fid=s.fid, kid=s.kid,
                  wall_s=rung.wall_s)
    measured = reported(s, rung.references)
    if rung.step is None:
        ctx.store.record_rung(RungRow(**common), measurements=measured, extractor=s.extractor)
        return
    ctx.store.record_rung(StepRow(**common, step=rung.step, references=references_of(rung.references)),
                          measurements=measured, extractor=s.extractor)


def reported(score: Score, references: Mapping[str, Score] | None = None) -> tuple[Measurement, ...]:
    """What a score's ``metric.report`` measured, to store beside its row: the target's, and each further
    reference's (Diff-Tuning's pre-training data) under its domain."""
    extra = tuple(replace(m, domain=domain) for domain, ref in (references or {}).items() for m in ref.measurements)
    return (*score.measurements, *extra)


def record_result(ctx: StudyContext, number: int, role: str, coefficients_json: str, rung: Rung) -> str:
    """COMPLETE if the trial's last rung was reached, else PRUNED (its last rung's numbers, at that N)."""
    state = "COMPLETE" if rung.final else "PRUNED"
    s = rung.score
    check_scores(ctx.spec, ctx.hashes, s, rung.references, f"trial {number}")
    base = s.fid if role == "baseline" else baseline_fid(ctx)
    delta = None if base is None or state != "COMPLETE" else s.fid - base
    return _record(ctx, number, rung, reported(s, rung.references), _row(
        ctx, number, role, coefficients_json, n=s.n, state=state, fid=s.fid, kid=s.kid, kid_std=s.kid_std,
        delta_fid=delta, model_hash=s.model_hash, ref_hash=s.ref_hash, wall_s=rung.wall_s, evaluated=True,
        references=references_of(rung.references), extras=dict(rung.extras)))


def record_failure(ctx: StudyContext, number: int, role: str, coefficients_json: str, reason: str,
                   evaluated: bool = True) -> None:
    """FAIL with its reason. ``evaluated=False`` (killed, interrupted, stopped by a bug) keeps it out of the
    trial budget."""
    _record(ctx, number, None, (), _row(ctx, number, role, coefficients_json, state="FAIL", error=reason,
                                        evaluated=evaluated))


def _record(ctx: StudyContext, number: int, rung: Rung | None, measured: tuple[Measurement, ...],
            row: TrialRow) -> str:
    """Write the row (and its report's measurements) while this driver still holds the trial's claim, tell
    Optuna (with the trial's numbers and pictures for the dashboard), then drop the claim."""
    item = trial_item(number)
    if not ctx.store.record_trial(row, claim=(item, ctx.driver.id), measurements=measured):
        ctx.echo(f"trial {number}: another driver recovered it while this one ran it (no heartbeat for too "
                 f"long?); this result is discarded")
        return LOST
    try:
        _tell(ctx, number, row, rung)
    finally:  # told, or not tellable now: either way this driver is done with it (a rerun tells it from its row)
        ctx.store.release(ctx.spec.name, item, ctx.driver.id)
    return row.state


def settle(ctx: StudyContext, number: int, role: str, coefficients_json: str, reason: str) -> None:
    """After recording a trial was cut short (an interruption, a failed write): a trial whose row was written is
    told from it; one without a row is FAIL, not evaluated. So no trial this driver holds is left RUNNING."""
    row = ctx.store.trial(ctx.spec.name, number)
    if row is None:
        record_failure(ctx, number, role, coefficients_json, reason, evaluated=False)
        return
    try:
        _tell(ctx, number, row)
    finally:
        ctx.store.release(ctx.spec.name, trial_item(number), ctx.driver.id)


def _tell(ctx: StudyContext, number: int, row: TrialRow, rung: Rung | None = None) -> None:
    """Tell Optuna what skipsearch's row says (once: a trial already finished is left as it is)."""
    frozen = ctx.storage.get_trial(_trial_id(ctx, number))
    if frozen.state.is_finished():
        return
    trial_id = frozen._trial_id
    pictures: OSError | None = None
    with suppress(optuna.exceptions.UpdateFinishedTrialError):  # another driver finished it a moment ago
        if row.state in ("COMPLETE", "PRUNED"):
            try:
                annotate_trial(ctx, frozen, row, rung)
            except OSError as err:  # a full disk or an unusable artifact folder: the numbers are told all the same
                if machine_failure(err) is None:
                    raise  # any other OSError is a bug of ours: its traceback, and the caller settles the trial
                pictures = err
        if row.state == "COMPLETE":
            numbers = {"fid": row.fid} | {number_column(*key): v for key, v in row.references.items()}
            ctx.study.tell(number, ctx.method.values(ctx.spec, numbers), skip_if_finished=True)
            if row.role == "baseline":
                annotate_baseline(ctx, row)
        elif row.state == "PRUNED":
            ctx.study.tell(number, state=State.PRUNED, skip_if_finished=True)
        else:
            ctx.storage.set_trial_user_attr(trial_id, "fail_reason", row.error or "")
            ctx.storage.set_trial_user_attr(trial_id, "evaluated", row.evaluated is not False)
            ctx.study.tell(number, state=State.FAIL, skip_if_finished=True)
    if pictures is not None:
        why = pictures.strerror or str(pictures)
        where = f" ({pictures.filename})" if pictures.filename else ""
        raise FileWriteError(f"trial {number} is recorded ({row.state}), but its pictures for optuna-dashboard could "
                             f"not be written: {why}{where}; free some space or set ${ARTIFACTS_ENV} to a writable "
                             f"folder, then run the same command again to continue") from pictures


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
            coefficients = ctx.method.suggest(optuna.trial.FixedTrial(t.params), ctx.spec, ctx.info)
            coefficients_json = coefficients.model_dump_json()
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
    return row.fid if row is not None and row.state == "COMPLETE" else None

