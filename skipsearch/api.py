"""The public verbs: run, best, export, apply, verify, trials. The CLI is a thin layer over these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skipsearch import confirm as _confirm
from skipsearch import exporting as _export
from skipsearch import study as _study
from skipsearch.spec import Spec, load_spec
from skipsearch.storage import Store
from skipsearch.tune import Placement


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
        placement: Placement | None = None) -> RunResult:
    """Search (continuing a study of the same name), then confirm the top-k on held-out seeds.

    With a ``Placement`` the trials run on Ray workers (a local Ray, or the cluster at its address);
    without one they run in this process. Both use the same evaluate().
    """
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    ctx = _study.open_study(spec, storage)
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


def trials(storage: str, study: str) -> pd.DataFrame:
    """skipsearch's table of a study's trials, as a DataFrame."""
    return Store(storage).trials_frame(study)


def best(storage: str, study: str) -> dict:
    """The confirmed winner (else the best search trial), with its coefficients and provenance; a
    multi-objective study adds its Pareto front (target FID, source FID)."""
    store = Store(storage)
    row = _export.chosen_trial(store, study)
    rec = _export.provenance(store, study, row) | {"coefficients": _confirm.coefficients_of(row).model_dump()}
    objectives = (store.study_spec(study).get("search") or {}).get("objectives") or []
    if len(objectives) > 1:
        rec["pareto_front"] = [{"trial": int(r.trial_number), "target_fid": float(r.fid),
                                "source_fid": float(r.source_fid),
                                "coefficients": _confirm.coefficients_of(r._asdict()).model_dump()}
                               for r in _confirm.pareto_front(store.trials_frame(study)).itertuples()]
    return rec


def pareto(storage: str, study: str) -> pd.DataFrame:
    """Completed trials on the (target FID, source FID) Pareto front, best target FID first."""
    return _confirm.pareto_front(Store(storage).trials_frame(study))


def export(storage: str, study: str, path: str | Path, fmt: str | None = None, trial: int | None = None) -> Path:
    return _export.export(Store(storage), study, path, fmt, trial)


apply = _export.apply
verify = _export.verify
