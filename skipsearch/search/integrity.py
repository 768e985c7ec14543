"""A study never mixes models or references: the content hashes it was stored with are checked at every open,
trial and confirmation.

A study's numbers compare only if every trial sampled the same weights and scored them against the same
reference statistics. ``resolve`` hashes the model's weights (``ModelInfo.weights_hash``) and each data set the
spec names (``metrics.reference.reference_key``: the pixels, the extractor and its weights); the first open
records them (``skipsearch_study_hashes``), every later open compares, before any trial. A study stored by an
older skipsearch gets its hashes from its recorded trials, if they agree. Each trial's score carries the hashes
it was computed with, so a worker that loaded a changed file (a Ray worker, or a model replaced while a driver
ran) is stopped before its numbers are recorded.
"""

from __future__ import annotations

from collections.abc import Mapping

from skipsearch.errors import UserError
from skipsearch.methods import method_for
from skipsearch.results import Score
from skipsearch.spec import Spec
from skipsearch.storage import Store

MODEL = "model"
REFERENCE = "metric.reference"
WAY_OUT = "Restore the original file(s), or use a new study name for the changed ones."


def describe(spec: Spec, field: str) -> str:
    """What a hash field stands for, in the spec's own words: the model and its folder, or a data set."""
    if field == MODEL:
        path = getattr(spec.model, "path", None)
        return f"model {spec.model.model_id}" + (f" (weights under {path})" if path else "")
    shown = dict(method_for(spec.kind).named_data(spec)).get(field)
    return f"{field} {shown} (its images, or the weights of extractor {spec.metric.extractor})" if shown else field


def _changed(spec: Spec, stored: dict[str, str], now: dict[str, str]) -> list[str]:
    return [f"  {describe(spec, f)}: stored {stored[f]}, now {now[f]}"
            for f in now if f in stored and stored[f] != now[f]]


def _from_records(store: Store, spec: Spec) -> dict[str, str]:
    """The hashes a study stored before skipsearch recorded them carries in its trials; two of one kind mean
    its numbers already mix files, and it is refused."""
    found = {}
    for field, values in store.recorded_hashes(spec.name).items():
        if len(values) > 1:
            raise UserError(f"study {spec.name!r} already mixes {len(values)} different hashes of "
                            f"{describe(spec, field)} in its recorded trials ({', '.join(sorted(values))}): the "
                            f"files changed between its runs, and its numbers do not compare. Use a new study "
                            f"name (and `skipsearch delete {spec.name}` to drop this one).")
        if values:
            found[field] = next(iter(values))
    return found


def check_study_hashes(store: Store, spec: Spec, now: dict[str, str]) -> dict[str, str]:
    """Compare the hashes of the files the spec names now with those the study was stored with (recording
    those it lacks), and return the study's; a changed file is a UserError, before any trial runs."""
    stored = store.study_hashes(spec.name) or _from_records(store, spec)
    for attempt in range(2):  # the second look: what another driver recorded at the same moment
        changed = _changed(spec, stored, now)
        if changed:
            raise UserError(f"study {spec.name!r} was stored with other files than the spec names now; its trials "
                            f"would not be comparable:\n" + "\n".join(changed) + f"\n{WAY_OUT}")
        if attempt == 0:
            stored = store.save_study_hashes(spec.name, {**now, **stored})
    return stored


def check_scores(spec: Spec, hashes: dict[str, str], score: Score, references: Mapping[str, Score],
                 what: str) -> None:
    """A trial's or held-out evaluation's scores: the target's (``metric.reference``) and each further
    reference's, against the data set its method names for that domain (``Method.reference_fields``)."""
    check_score(spec, hashes, score, what)
    fields = method_for(spec.kind).reference_fields(spec) if references else {}
    for domain, other in references.items():
        check_score(spec, hashes, other, what, fields[domain])


def check_score(spec: Spec, hashes: dict[str, str], score: Score, what: str, reference: str = REFERENCE) -> None:
    """A trial's or confirmation's score was computed with the study's model and reference (the data set at spec
    field ``reference``), or it is refused before it is recorded (a UserError: the run stops and says which file
    changed)."""
    now = {MODEL: score.model_hash, reference: score.ref_hash}
    changed = [f"  {describe(spec, f)}: stored {hashes[f]}, this {what} used {now[f]}"
               for f in now if hashes.get(f) is not None and now[f] != hashes[f]]
    if changed:
        raise UserError(f"study {spec.name!r}: {what} was computed with other files than the study was stored "
                        f"with (a file changed after this process or a worker had loaded it); it is not "
                        f"recorded:\n" + "\n".join(changed) + "\nRun again in a fresh process: a file that differs "
                        "from the study's is then refused before any trial, saying what to do.")
