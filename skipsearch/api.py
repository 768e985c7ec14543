"""The public verbs: run, best, export, apply, verify, trials, confirmations, studies, delete. The CLI is a thin
layer over these.

``storage`` may be None everywhere: then ``$SKIPSEARCH_STORAGE``, else (for ``run``) the spec's ``storage:``,
else ``sqlite:///skipsearch.db``. Readers (best, export, trials, confirmations, studies) never create a database.
The DataFrames of ``trials`` and ``confirmations`` are documented in README.md, "Reading results with pandas".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skipsearch.errors import UserError
from skipsearch.interrupts import sigterm_as_interrupt
from skipsearch.storage import Store, urls

if TYPE_CHECKING:
    import pandas as pd

    from skipsearch.exchange.apply_file import apply
    from skipsearch.exchange.provenance import Provenance
    from skipsearch.exchange.verify import verify
    from skipsearch.methods import Coefficients
    from skipsearch.search.ray_tune import Placement
    from skipsearch.search.readout import Readout
    from skipsearch.search.verdict import Verdict
    from skipsearch.spec import Spec
    from skipsearch.storage.store import StudySummary

# Each verb imports what it uses, where it uses it: a reader (``studies``, ``best``, ``export``) never pays for the
# driver's Optuna, Ray or torch, and ``studies`` not even for pandas. Re-exported names load on first use.
_LATER = {"apply": "skipsearch.exchange.apply_file", "verify": "skipsearch.exchange.verify",
          "Verdict": "skipsearch.search.verdict"}

__all__ = ["BestTrial", "RunResult", "Verdict", "apply", "best", "confirmations", "delete", "export", "pareto",
           "report", "run", "studies", "study_summaries", "trials", "verify"]


def __getattr__(name: str):
    if name in _LATER:
        return getattr(importlib.import_module(_LATER[name]), name)
    raise AttributeError(f"module 'skipsearch.api' has no attribute {name!r}")


@dataclass(kw_only=True)
class RunResult:
    study: str
    storage: str  # password masked
    trials: pd.DataFrame
    confirmation: pd.DataFrame
    pareto: pd.DataFrame | None = None  # multi-objective studies: the non-dominated trials
    readout: Readout | None = None  # what the study's method says of its columns (None: FID, one objective)
    # a claimed winner's coefficients that sit at an end of their searched range (``Method.edges``), in words
    edges: tuple[str, ...] = ()

    @property
    def winner(self) -> int | None:
        """The confirmed trial with the lowest mean held-out FID, whether or not it beats the baseline: read
        ``verdict`` before using it."""
        from skipsearch.search.verdict import winner

        return winner(self.confirmation)

    @property
    def verdict(self) -> Verdict:
        """The same verdict ``best`` and the end-of-run table give: ``win`` only when the 95% paired interval on
        the held-out dFID lies below zero and the second feature space does not call the winner worse;
        ``interval`` (mean, low, high) and ``text`` say by how much, ``opinion`` what the second space said."""
        from skipsearch.search.verdict import verdict

        return verdict(self.confirmation, None if self.readout is None else self.readout.references)


@dataclass(frozen=True, kw_only=True)
class ParetoPoint:
    """A trial on the Pareto front of a two-objective study: its value of each objective, as the method orders
    them (``Method.objectives``: Diff-Tuning's target FID, then its source FID)."""

    trial: int
    target_fid: float
    source_fid: float
    coefficients: Coefficients


@dataclass(frozen=True, kw_only=True)
class BestTrial:
    """A study's winner: its coefficients and provenance, and (two objectives) the Pareto front."""

    coefficients: Coefficients
    provenance: Provenance
    pareto_front: tuple[ParetoPoint, ...] | None = None
    verdict: Verdict | None = None  # the held-out verdict (95% paired interval), once confirmed
    method: str = ""  # the method as the run's header and the report name it ("FreeU + Skip-Tuning")
    readout: Readout | None = None  # what the study's method says of its columns (the front's, for a table)
    edges: tuple[str, ...] = ()  # a claimed winner's coefficients at an end of their range (``Method.edges``)

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``skipsearch best --json`` prints: the method, the provenance's fields, the coefficients,
        the front."""
        out = ({"method": self.method} if self.method else {}) | self.provenance.model_dump(mode="json") | {
            "coefficients": self.coefficients.model_dump(mode="json")}
        if self.pareto_front is not None:
            out["pareto_front"] = [{"trial": p.trial, "target_fid": p.target_fid, "source_fid": p.source_fid,
                                    "coefficients": p.coefficients.model_dump(mode="json")} for p in self.pareto_front]
        if self.verdict is not None:
            v = self.verdict
            second = None if v.opinion_interval is None else {
                "delta_fid": v.opinion_interval.mean, "low": v.opinion_interval.low, "high": v.opinion_interval.high}
            out["verdict"] = {"trial": v.trial, "win": v.win, "text": v.text, "second_opinion": v.opinion,
                              "second_opinion_interval": second}
        out["edges"] = list(self.edges)
        return out


@sigterm_as_interrupt()  # SIGTERM records the trial in flight as Ctrl-C does (skipsearch.interrupts)
def run(spec: Spec | str | Path, storage: str | None = None, trials: int | None = None,
        placement: Placement | None = None, echo: Callable[[str], None] | None = None,
        model: Any = None) -> RunResult:
    """Search (continuing a study of the same name), then confirm the top-k on held-out seeds.

    With a ``Placement`` the trials run on Ray workers (a local Ray, or the cluster at its address);
    without one they run in this process. Both use the same evaluate(). Several runs may share one study:
    ``trials`` is the study-wide budget of evaluated trials. ``model``: the user's own network, in memory, for a
    spec whose model section is ``family: hooked`` (it names the network's skips) or ``family: diffusers``
    without a path (a UNet or pipeline object); it runs in this process.

    SIGTERM during the run raises ``skipsearch.errors.Terminated`` (a ``KeyboardInterrupt``) after the trial in
    flight is recorded as not evaluated, when called on the main thread and SIGTERM has no handler of the
    program's own (the default handler is restored after; ``skipsearch.interrupts``). ``echo`` takes the
    driver's lines (default: printed above the progress bars).
    """
    from tqdm.auto import tqdm

    from skipsearch import frames
    from skipsearch.search import confirm as _confirm
    from skipsearch.search import driver as _driver
    from skipsearch.search.heldout import pareto_front
    from skipsearch.search.readout import readout
    from skipsearch.search.verdict import winner_edges
    from skipsearch.spec import TRIALS_MAX, Spec
    from skipsearch.specfile import load_spec

    source = "spec" if isinstance(spec, Spec) else str(spec)
    spec = spec.anchored(Path.cwd()) if isinstance(spec, Spec) else load_spec(spec)  # paths absolute: skipsearch.paths
    if trials is not None and not 1 <= trials <= TRIALS_MAX:
        raise UserError(f"--trials must be between 1 and {TRIALS_MAX}, got {trials}")
    if model is not None:
        _hand_over(spec, model, placement)
    if placement is not None:
        from skipsearch.search.ray_tune import require_ray

        require_ray()
        _ray_fits(spec, placement)
    ctx = _driver.open_study(spec, storage, source, echo or tqdm.write)
    try:
        budget = trials or spec.search.trials
        if placement is None:
            _driver.search(ctx, budget)
        else:
            from skipsearch.search.ray_tune import search_on_ray

            search_on_ray(ctx, budget, placement)
        conf = _confirm.confirm(ctx)
        frame = frames.trials(ctx.store, spec.name)
        shown = readout(spec, unit=True)
        front = pareto_front(frame, shown.objectives) if shown.multi_objective else None
        return RunResult(study=spec.name, storage=ctx.store.shown_url, trials=frame, confirmation=conf, pareto=front,
                         readout=shown, edges=winner_edges(spec, conf))
    finally:
        ctx.close()


def _ray_fits(spec: Spec, placement: Placement) -> None:
    """Ray hides the GPUs from a trial given none, so its extractor runs on the worker's CPU whatever the
    driver's device is; a CUDA-only precision would fail every trial after the study was stored. So would a
    file the spec names that the cluster's nodes do not see (``search.worker_paths``)."""
    from skipsearch.metrics.features import precision_problem
    from skipsearch.search.worker_paths import check_on_workers

    problem = precision_problem(spec.metric.extractor, "cpu") if placement.gpus_per_trial == 0 else None
    if problem is not None:
        raise UserError(f"metric.extractor {spec.metric.extractor!r} with --gpus-per-trial 0: Ray trials given no "
                        f"GPU run on the CPU, where {problem}; or give each trial a GPU with --gpus-per-trial")
    check_on_workers(spec, placement)


def _hand_over(spec: Spec, model: Any, placement: Placement | None) -> None:
    from skipsearch.models import family_for

    if placement is not None:
        raise UserError("a network handed over with model= runs in this process; leave out the Ray placement")
    family_for(spec.model).hand_over(spec.model, model)


def _reader(storage: str | None) -> Store:
    return Store(urls.choose(storage), create=False)


def trials(storage: str | None, study: str) -> pd.DataFrame:
    """skipsearch's table of a study's trials, one row per trial, with one column per coefficient field
    (schema: README, "Reading results with pandas"). An unknown study raises UserError."""
    from skipsearch import frames

    return frames.trials(_reader(storage), study)


def confirmations(storage: str | None, study: str, per_seed_set: bool = False) -> pd.DataFrame:
    """The held-out confirmation at the study's ``confirm.n`` (the N that ``best`` and ``export`` judge at):
    one row per confirmed candidate, baseline first, with the paired dFID's mean, spread and 95% interval, and
    one column per coefficient field. ``per_seed_set=True``: the stored rows themselves, one per candidate and
    seed set, at every N confirmed so far (see their ``n``), with each trial's role and coefficients.
    An unknown study raises UserError."""
    from skipsearch import frames

    return frames.confirmations(_reader(storage), study, per_seed_set)


def best(storage: str | None, study: str) -> BestTrial:
    """The confirmed winner (else the best search trial), with its coefficients and provenance; a
    multi-objective study adds its Pareto front (target FID, source FID)."""
    from skipsearch.exchange import export as _export
    from skipsearch.methods import method_for, parse_coefficients
    from skipsearch.search.heldout import coefficients_of, heldout_summary, pareto_front
    from skipsearch.search.readout import readout
    from skipsearch.search.verdict import verdict as judge
    from skipsearch.search.verdict import winner_edges

    store = _reader(storage)
    row = _export.chosen_trial(store, study)
    spec = _export.stored_spec(store, study)
    shown = readout(spec)
    front = None
    if shown.multi_objective:
        target, other = shown.objectives[:2]
        front = tuple(ParetoPoint(trial=int(r.trial_number), target_fid=float(r[target]), source_fid=float(r[other]),
                                  coefficients=parse_coefficients(r.coefficients_json))
                      for _, r in pareto_front(store.trials_frame(study), shown.objectives).iterrows())
    table = heldout_summary(store, study, spec.confirm.n, shown.references)
    judged = None if table.empty else judge(table, shown.references)
    shows_winner = judged is not None and judged.trial == int(row.trial_number)
    return BestTrial(coefficients=coefficients_of(row), provenance=_export.provenance(store, study, row, table, judged),
                     pareto_front=front, verdict=judged, method=method_for(spec.kind).display_name(spec),
                     readout=shown, edges=winner_edges(spec, table, judged) if shows_winner else ())


def pareto(storage: str | None, study: str) -> pd.DataFrame:
    """Completed trials on the Pareto front of the study's objectives and further references' FIDs (Diff-Tuning's
    target and source FID), best target FID first; empty for a study that measures FID against one reference."""
    from skipsearch import frames
    from skipsearch.exchange.export import stored_spec
    from skipsearch.search.heldout import pareto_front
    from skipsearch.search.readout import readout

    store = _reader(storage)
    columns = readout(stored_spec(store, study)).front
    frame = frames.with_method_columns(store.trials_frame(study), "trials")  # every method's, as in ``trials``
    return pareto_front(frame, columns) if columns else frame.iloc[0:0]


def export(storage: str | None, study: str, path: str | Path, fmt: str | None = None,
           trial: int | None = None) -> Path:
    """Write the winner's coefficients (or ``trial``'s) with their provenance; returns the file's path. Whether the
    file is a claimed win is in its provenance (``verdict.claimed_win``), and ``exported`` returns it too."""
    return exported(storage, study, path, fmt, trial).path


def exported(storage: str | None, study: str, path: str | Path, fmt: str | None = None, trial: int | None = None):
    """``export``, returning the written file with the provenance it holds (``exchange.export.Exported``), so a
    caller can say whether it is a claimed win (``claimed_win``, ``caution()``)."""
    from skipsearch.exchange import export as _export

    return _export.export(_reader(storage), study, path, fmt, trial)


def studies(storage: str | None) -> pd.DataFrame:
    """Every study in the database, with its trials counted by state."""
    return _reader(storage).studies_frame()


def study_summaries(storage: str | None) -> list[StudySummary]:
    """``studies`` as typed rows, without pandas: what the CLI's ``studies`` prints, at the cost of opening the
    database and no more."""
    return _reader(storage).study_summaries()


def delete(storage: str | None, study: str) -> int:
    """Remove a study: Optuna's records and skipsearch's, together. Refused while a driver runs it.
    Fine-tuned weights files on disk are left alone. Returns how many skipsearch rows were removed."""
    import optuna

    from skipsearch import frames
    from skipsearch.search import driver as _driver
    from skipsearch.search.coordination import live_drivers

    url = urls.choose(storage)
    frames.require_study(_reader(url), study)
    store = Store(url)
    running = live_drivers(store, study)
    if running:
        raise UserError(f"study {study!r} is being run by {len(running)} driver(s) (pid "
                        f"{', '.join(str(d['pid']) for d in running)}); stop them first")
    rdb = _driver.open_optuna_storage(url)
    try:
        optuna.delete_study(study_name=study, storage=rdb)
    except KeyError:
        pass  # skipsearch registered it, but the run stopped before Optuna did
    return store.delete_study(study)


def report(storage: str | None, studies: list[str] | str, path: str | Path = "report.html") -> Path:
    """One self-contained HTML page (plotly) on one or more studies of a database; see ``htmlreport``."""
    from skipsearch.htmlreport import report as _report

    return _report(storage, [studies] if isinstance(studies, str) else list(studies), path)
