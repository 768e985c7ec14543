"""Everything a reader needs, written into the Optuna study itself, so optuna-dashboard shows it without
skipsearch: the metric's name, the study's facts (method, model and hash, sampler and NFE, extractor,
reference and hash, N and rungs, the baseline's FID), each trial's numbers, a note with the spec and the
verdict, and per-trial pictures (the first samples, the coefficients' profile) in the artifact store.

Optuna refuses attributes on a finished trial, so a trial's numbers are set just before it is told, and
its held-out results (known only later) go in its note and in the study's ``heldout`` attribute. Study-level
writes happen under the study lock: two drivers updating one attribute at once could collide.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from skipsearch.methods import describe, parse_coefficients
from skipsearch.methods.method import Profile
from skipsearch.previews import png_bytes
from skipsearch.results import Rung
from skipsearch.search.context import StudyContext
from skipsearch.search.verdict import edge_note, interval_of, verdict, winner_edges
from skipsearch.storage.records import TrialRow, number_column


def _set_study_attrs(study: optuna.Study, values: dict[str, Any]) -> None:
    """Set only what changed: every driver calls this on every start."""
    have = study.user_attrs
    for key, value in values.items():
        if have.get(key) != value:
            study.set_user_attr(key, value)


def study_facts(ctx: StudyContext) -> dict[str, Any]:
    """The study's facts that the spec and the model decide (the reference's hash and the baseline's FID
    are added when the baseline completes)."""
    spec, sampler = ctx.spec, ctx.spec.sampler.config()
    m, c = spec.metric, spec.confirm
    return {"method": ctx.method.display_name(spec), "kind": spec.kind, "model": spec.model.model_id,
            "model_hash": ctx.info.weights_hash, "sampler": f"{sampler.name}, {sampler.steps} steps",
            "nfe": sampler.nfe, "extractor": m.extractor, "reference": m.reference, "n": m.n,
            "rungs": list(m.rungs), "seed": m.seed,
            "confirm": f"top {c.top_k} at N={c.n} on {c.seed_sets} held-out seed sets"}


def annotate_study(ctx: StudyContext) -> None:
    """Metric names, the study's facts and (until a verdict replaces it) a note with the spec. Under the lock."""
    names = ctx.method.metric_names(ctx.spec)
    if ctx.study.metric_names != names:
        with warnings.catch_warnings():  # "experimental since 3.2": optuna-dashboard reads it all the same
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ctx.study.set_metric_names(names)
    _set_study_attrs(ctx.study, study_facts(ctx))
    if "verdict" not in ctx.study.user_attrs:
        save_study_note(ctx, "not confirmed yet: the held-out confirmation runs after the search.", None)


def trial_attrs(row: TrialRow) -> dict[str, Any]:
    """A finished trial's numbers, as its user attributes (set before Optuna is told): the common ones, then its
    numbers against the method's further references (``{domain}_{metric}``) and the method's extras, under their
    frame columns' names, whatever the method."""
    values = {"n": row.n, "nfe": row.nfe, "fid": row.fid, "kid": row.kid, "kid_std": row.kid_std,
              "delta_fid": row.delta_fid, "wall_s": None if row.wall_s is None else round(row.wall_s, 3),
              "extractor": row.extractor}
    values |= {number_column(domain, metric): value for (domain, metric), value in row.references.items()}
    values |= row.extras
    return {k: v for k, v in values.items() if v is not None}


def annotate_trial(ctx: StudyContext, frozen: optuna.trial.FrozenTrial, row: TrialRow, rung: Rung | None) -> None:
    """Numbers and pictures of a trial about to be told COMPLETE or PRUNED (its profile plots were drawn while
    it ran: ``search.pictures``)."""
    attrs = trial_attrs(row)
    if rung is not None and rung.score.evaluations_saved:
        attrs["evaluations_saved"] = rung.score.evaluations_saved  # started from the baseline's states
    for key, value in attrs.items():
        ctx.storage.set_trial_user_attr(frozen._trial_id, key, value)
    if ctx.artifacts is None:
        return
    with tempfile.TemporaryDirectory(prefix="skipsearch-artifacts-") as tmp:
        files = []
        if rung is not None and rung.score.preview:
            grid = Path(tmp, f"samples-trial-{row.trial_number:04d}.png")
            grid.write_bytes(png_bytes(rung.score.preview))
            files.append(grid)
        files += ctx.plots.take(row.trial_number, trial_profiles(ctx, row.coefficients_json), Path(tmp))
        for path in files:
            optuna.artifacts.upload_artifact(artifact_store=ctx.artifacts, file_path=str(path),
                                             study_or_trial=frozen, storage=ctx.storage)
            path.unlink(missing_ok=True)


def trial_profiles(ctx: StudyContext, coefficients_json: str) -> tuple[Profile, ...]:
    return ctx.method.profiles(ctx.spec, parse_coefficients(coefficients_json), ctx.info)


def annotate_baseline(ctx: StudyContext, row: TrialRow) -> None:
    """The baseline's FID and the reference statistics' hash, once the baseline is complete."""
    _set_study_attrs(ctx.study, {"baseline_fid": row.fid, "reference_hash": row.ref_hash})


@dataclass(frozen=True)
class _TrialNote:
    """What ``optuna_dashboard.save_note`` reads of a trial; a finished trial cannot be an ``optuna.Trial``
    without asking the sampler for it again."""

    study: optuna.Study
    _trial_id: int

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        return self.study._storage


def heldout_attrs(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The held-out results per confirmed trial, as the study's ``heldout`` attribute (JSON)."""
    out = {}
    for r in table.itertuples():
        ci = interval_of(r)
        out[str(int(r.trial_number))] = {
            "role": r.role, "n": int(r.n), "seed_sets": int(r.seed_sets), "heldout_fid": float(r.heldout_fid),
            "heldout_fid_sd": float(r.heldout_fid_std), "delta_fid": ci.mean, "delta_fid_low": ci.low,
            "delta_fid_high": ci.high, "lower_on": int(r.lower_on)}
    return out


def annotate_confirmation(ctx: StudyContext, table: pd.DataFrame) -> None:
    """The verdict and the held-out table in the study's note and attributes, and each candidate's results
    in its own note. Under the study lock."""
    if table.empty:
        return
    judged = verdict(table, ctx.method.references(ctx.spec))
    edges = winner_edges(ctx.spec, table, judged)
    _set_study_attrs(ctx.study, {"heldout": heldout_attrs(table), "verdict": judged.text,
                                 "winner": judged.trial, "win": judged.win, "second_opinion": judged.opinion,
                                 "edges": list(edges)})
    from optuna_dashboard import save_note

    numbers = {t.number: t._trial_id for t in ctx.study.get_trials(deepcopy=False)}
    for r in table.itertuples():
        if int(r.trial_number) in numbers:
            save_note(_TrialNote(ctx.study, numbers[int(r.trial_number)]), _trial_note(r))
    note = edge_note(edges)
    save_study_note(ctx, judged.text + (f"\n\n{note}" if note else ""), table)


def _trial_note(r) -> str:
    ci = interval_of(r)
    interval = ("no interval (one seed set)" if ci.low is None
                else f"95% paired interval [{ci.low:+.4f}, {ci.high:+.4f}]")
    return (f"## Held-out confirmation\n\nN={int(r.n)} on {int(r.seed_sets)} held-out seed sets never used in "
            f"the search.\n\n- held-out FID: {r.heldout_fid:.4f} (sd {r.heldout_fid_std:.4f} over seed sets)\n"
            f"- paired dFID against the baseline: {ci.mean:+.4f}, {interval}\n"
            f"- lower than the baseline on {int(r.lower_on)} of {int(r.seed_sets)} seed sets\n")


def save_study_note(ctx: StudyContext, verdict_text: str, table: pd.DataFrame | None) -> None:
    """The study's note: what it searches, the verdict, the held-out table and the spec as stored."""
    from optuna_dashboard import save_note

    from skipsearch.search.stored_spec import stored_form

    spec = ctx.spec
    lines = [f"# {spec.name}: {ctx.method.display_name(spec)} on {spec.model.model_id}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += ["## Verdict", "", verdict_text, ""]
    if table is not None and not table.empty:
        lines += ["| trial | role | coefficients | held-out FID | paired dFID | 95% interval |",
                  "|---|---|---|---|---|---|"]
        for r in table.itertuples():
            ci = interval_of(r)
            span = "n/a" if ci.low is None else f"[{ci.low:+.4f}, {ci.high:+.4f}]"
            lines.append(f"| {int(r.trial_number)} | {r.role} | {describe(r.coefficients)} | {r.heldout_fid:.4f} | "
                         f"{ci.mean:+.4f} | {span} |")
        lines.append("")
    lines += ["## Spec", "", "```yaml", yaml.safe_dump(stored_form(spec), sort_keys=False).rstrip(), "```", ""]
    save_note(ctx.study, "\n".join(lines))

