"""The public verbs: run, best, export, apply, verify, trials, studies, delete. The CLI is a thin layer over these.

``storage`` may be None everywhere: then ``$SKIPSEARCH_STORAGE``, else (for ``run``) the spec's ``storage:``,
else ``sqlite:///skipsearch.db``. Readers (best, export, trials, studies) never create a database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from tqdm.auto import tqdm

from skipsearch import confirm as _confirm
from skipsearch import exporting as _export
from skipsearch import study as _study
from skipsearch.applying import apply
from skipsearch.coordination import live_drivers
from skipsearch.errors import UserError
from skipsearch.spec import TRIALS_MAX, Spec, load_spec
from skipsearch.storage import Store, urls
from skipsearch.tune import Placement

__all__ = ["RunResult", "apply", "best", "delete", "export", "pareto", "run", "studies", "trials", "verify"]


@dataclass
class RunResult:
    study: str
    storage: str  # password masked
    trials: pd.DataFrame
    confirmation: pd.DataFrame
    pareto: pd.DataFrame | None = None  # multi-objective Diff-Tuning studies: the non-dominated trials

    @property
    def winner(self) -> int | None:
        rest = self.confirmation[self.confirmation.role != "baseline"] if not self.confirmation.empty else None
        return None if rest is None or rest.empty else int(rest.sort_values("heldout_fid").trial_number.iloc[0])


def run(spec: Spec | str | Path, storage: str | None = None, trials: int | None = None,
        placement: Placement | None = None, echo: Callable[[str], None] = tqdm.write) -> RunResult:
    """Search (continuing a study of the same name), then confirm the top-k on held-out seeds.

    With a ``Placement`` the trials run on Ray workers (a local Ray, or the cluster at its address);
    without one they run in this process. Both use the same evaluate(). Several runs may share one study:
    ``trials`` is the study-wide budget of evaluated trials.
    """
    source = "spec" if isinstance(spec, Spec) else str(spec)
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    if trials is not None and not 1 <= trials <= TRIALS_MAX:
        raise UserError(f"--trials must be between 1 and {TRIALS_MAX}, got {trials}")
    ctx = _study.open_study(spec, storage, source, echo)
    try:
        budget = trials or spec.search.trials
        if placement is None:
            _study.search(ctx, budget)
        else:
            from skipsearch.tune import search_on_ray

            search_on_ray(ctx, budget, placement)
        conf = _confirm.confirm(ctx)
        frame = ctx.store.trials_frame(spec.name)
        front = _confirm.pareto_front(frame) if ctx.multi_objective else None
        return RunResult(spec.name, ctx.store.shown_url, frame, conf, front)
    finally:
        ctx.close()


def _reader(storage: str | None) -> Store:
    return Store(urls.choose(storage), create=False)


def trials(storage: str | None, study: str) -> pd.DataFrame:
    """skipsearch's table of a study's trials, as a DataFrame."""
    return _reader(storage).trials_frame(study)


def best(storage: str | None, study: str) -> dict:
    """The confirmed winner (else the best search trial), with its coefficients and provenance; a
    multi-objective study adds its Pareto front (target FID, source FID)."""
    store = _reader(storage)
    row = _export.chosen_trial(store, study)
    rec = _export.provenance(store, study, row).model_dump(mode="json") | {
        "coefficients": _confirm.coefficients_of(row).model_dump()}
    objectives = (store.study_spec(study).get("search") or {}).get("objectives") or []
    if len(objectives) > 1:
        rec["pareto_front"] = [{"trial": int(r.trial_number), "target_fid": float(r.fid),
                                "source_fid": float(r.source_fid),
                                "coefficients": _confirm.coefficients_of(r._asdict()).model_dump()}
                               for r in _confirm.pareto_front(store.trials_frame(study)).itertuples()]
    return rec


def pareto(storage: str | None, study: str) -> pd.DataFrame:
    """Completed trials on the (target FID, source FID) Pareto front, best target FID first."""
    return _confirm.pareto_front(_reader(storage).trials_frame(study))


def export(storage: str | None, study: str, path: str | Path, fmt: str | None = None,
           trial: int | None = None) -> Path:
    return _export.export(_reader(storage), study, path, fmt, trial)


def studies(storage: str | None) -> pd.DataFrame:
    """Every study in the database, with its trials counted by state."""
    return _reader(storage).studies_frame()


def delete(storage: str | None, study: str) -> int:
    """Remove a study: Optuna's records and skipsearch's, together. Refused while a driver runs it.
    Fine-tuned weights files on disk are left alone. Returns how many skipsearch rows were removed."""
    url = urls.choose(storage)
    if _reader(url).study_spec(study) is None:
        raise UserError(f"no study named {study!r} in {urls.shown(url)}")
    store = Store(url)
    running = live_drivers(store, study)
    if running:
        raise UserError(f"study {study!r} is being run by {len(running)} driver(s) (pid "
                        f"{', '.join(str(d['pid']) for d in running)}); stop them first")
    rdb = _study.open_optuna_storage(url)
    try:
        optuna.delete_study(study_name=study, storage=rdb)
    except KeyError:
        pass  # skipsearch registered it, but the run stopped before Optuna did
    return store.delete_study(study)


verify = _export.verify
