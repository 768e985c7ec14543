"""``skipsearch report``: one self-contained HTML page on one or more studies.

This module gathers each study's evidence into a typed ``StudyData`` (skipsearch's tables, the held-out
verdict, Optuna's parameter importances, the winner's profile, the sample grids from the artifact store)
and lays the page out; the figures themselves are defined in ``skipsearch.dashboards.figures``. The page
inlines plotly.js and the images, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pandas as pd

from skipsearch.errors import UserError
from skipsearch.exchange.export import stored_spec
from skipsearch.files import atomic_write_text
from skipsearch.methods import Method, method_for, parse_coefficients
from skipsearch.methods.method import Profile
from skipsearch.search.heldout import heldout_reported, heldout_summary
from skipsearch.search.measured import reported
from skipsearch.search.verdict import Verdict, edge_note, verdict, winner_edges
from skipsearch.spec import Spec
from skipsearch.storage import Store, engine_kwargs, urls
from skipsearch.storage.artifacts import artifact_store
from skipsearch.storage.facts import study_facts

GRID_PREFIX = "samples-trial-"


@dataclass(kw_only=True)
class StudyData:
    """Everything the report draws for one study."""

    name: str
    spec: Spec
    method: Method
    trials: pd.DataFrame  # skipsearch's trials table
    rungs: pd.DataFrame  # FID at each sample-count rung (same seeds as the trial's)
    table: pd.DataFrame  # heldout_summary at confirm.n: one row per candidate, with the 95% interval
    confirmations: pd.DataFrame  # the raw held-out rows (candidate x seed set)
    verdict: Verdict
    importances: dict[str, float] | str  # parameter -> importance, or why there are none
    profiles: tuple[Profile, ...]  # the winner's (or the best trial's)
    shown_trial: int | None  # whose profile and grid are shown beside the baseline's
    grids: dict[str, bytes] = field(default_factory=dict)  # "baseline" / "winner" -> PNG
    # ``metric.report``'s numbers (``search.measured``): per trial at the search N, per candidate held out
    reported: pd.DataFrame = field(default_factory=pd.DataFrame)
    heldout_reported: pd.DataFrame = field(default_factory=pd.DataFrame)
    edges: tuple[str, ...] = ()  # a claimed winner's coefficients at an end of their range (``Method.edges``)

    @property
    def baseline(self) -> pd.Series | None:
        done = self.trials[(self.trials.role == "baseline") & (self.trials.state == "COMPLETE")]
        return None if done.empty else done.iloc[0]


def _importances(study: optuna.Study) -> dict[str, float] | str:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 3:
        return f"only {len(done)} completed trials; importances need at least 3"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda t: t.values[0])
    except (RuntimeError, ValueError) as err:  # e.g. every trial had the same parameters
        return f"not computable: {err}"


def _grids(study: optuna.Study, rdb, store, numbers: dict[str, int | None]) -> dict[str, bytes]:
    """The stored sample grids of the named trials (none where the artifact store or the file is missing)."""
    out: dict[str, bytes] = {}
    if store is None:
        return out
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for label, number in numbers.items():
        trial = by_number.get(number) if number is not None else None
        if trial is None:
            continue
        for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=rdb):
            if meta.filename.startswith(GRID_PREFIX):
                try:
                    with store.open_reader(meta.artifact_id) as reader:
                        out[label] = reader.read()
                except (OSError, optuna.artifacts.exceptions.ArtifactNotFound):
                    pass  # the folder was moved or cleaned: the report says the grid is missing
                break
    return out


def gather(url: str, study: str) -> StudyData:
    """One study's evidence, read only."""
    store = Store(url, create=False)
    reader_url = store.reader_url  # Optuna reads it as the store does: read-only (a read-only file too)
    try:
        spec = stored_spec(store, study)
        trials, rungs = store.trials_frame(study), store.rungs_frame(study)
        confirmations = store.confirmations_frame(study)
        table = heldout_summary(store, study, spec.confirm.n)
        reported_trials = reported(store, study, "trial", spec.metric.extractor)
        reported_heldout = heldout_reported(store, study, spec.confirm.n, spec.metric.extractor)
        info = study_facts(store, study, spec.model)  # as stored: the model may have lived in another process
    finally:
        store.close()
    method = method_for(spec.kind)
    judged = verdict(table, method.references(spec)) if not table.empty else Verdict(
        trial=None, win=False, interval=None, text="Not confirmed on held-out seeds yet: no verdict.")
    rdb = optuna.storages.RDBStorage(reader_url, engine_kwargs=engine_kwargs(url), skip_table_creation=True)
    try:
        ostudy = optuna.load_study(study_name=study, storage=rdb)
    except KeyError:
        raise UserError(f"study {study!r} has no Optuna study in {urls.shown(url)} (its run stopped before "
                        f"the search began)") from None
    done = trials[(trials.state == "COMPLETE") & (trials.role == "search")]
    shown = judged.trial if judged.trial is not None else (
        None if done.empty else int(done.sort_values("fid").trial_number.iloc[0]))
    profiles: tuple[Profile, ...] = ()
    if shown is not None:
        row = trials[trials.trial_number == shown].iloc[0]
        profiles = method.profiles(spec, parse_coefficients(row.coefficients_json), info)
    base = trials[trials.role == "baseline"].trial_number
    numbers = {"baseline": None if base.empty else int(base.iloc[0]), "winner": shown}
    data = StudyData(name=study, spec=spec, method=method, trials=trials, rungs=rungs, table=table,
                     confirmations=confirmations[confirmations.n == spec.confirm.n], verdict=judged,
                     importances=_importances(ostudy), profiles=profiles, shown_trial=shown,
                     grids=_grids(ostudy, rdb, artifact_store(url, create=False), numbers),
                     reported=reported_trials, heldout_reported=reported_heldout,
                     edges=winner_edges(spec, table, judged))
    rdb.remove_session()
    return data


def _img(png: bytes | None, caption: str) -> str:
    label = html.escape(caption)
    if png is None:
        return f"<figure><p class='missing'>no sample grid stored</p><figcaption>{label}</figcaption></figure>"
    data = base64.b64encode(png).decode("ascii")
    return f"<figure><img src='data:image/png;base64,{data}' alt='{label}'><figcaption>{label}</figcaption></figure>"


def _facts(d: StudyData) -> str:
    s, sampler = d.spec, d.spec.sampler.config()
    rows = [("method", d.method.display_name(s)), ("model", s.model.model_id),
            ("sampler", f"{sampler.name}, NFE {sampler.nfe}"),
            ("extractor", s.metric.extractor), ("reference", s.metric.reference),
            ("search N (rungs)", f"{s.metric.n} ({', '.join(map(str, s.metric.rungs)) or 'none'})"),
            ("trials", ", ".join(f"{int((d.trials.state == st).sum())} {st.lower()}"
                                 for st in ("COMPLETE", "PRUNED", "FAIL"))),
            ("held-out", f"top {s.confirm.top_k} at N={s.confirm.n} on {s.confirm.seed_sets} seed sets")]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='facts'>{body}</table>"


def _reported(d: StudyData) -> str:
    """The report's numbers (``metric.report``) of the baseline and the shown trial: at the search N, and their
    means over the held-out seed sets; nothing when the study reports none."""
    names = [c for c in d.reported.columns if c != "trial_number"]
    if not names:
        return ""
    base = d.trials[d.trials.role == "baseline"].trial_number
    shown = {"baseline": None if base.empty else int(base.iloc[0])}
    if d.shown_trial is not None and d.shown_trial != shown["baseline"]:
        shown[f"trial {d.shown_trial}"] = d.shown_trial
    columns = [(f"{label}, search N", d.reported, "", number) for label, number in shown.items()]
    if len(d.heldout_reported.columns) > 1:
        columns += [(f"{label}, held-out mean", d.heldout_reported, "heldout_", number)
                    for label, number in shown.items()]

    def cell(frame: pd.DataFrame, prefix: str, number: int | None, name: str) -> str:
        row = frame[frame.trial_number == number]
        value = row[prefix + name].iloc[0] if number is not None and not row.empty else float("nan")
        return "" if pd.isna(value) else f"{value:.4f}"

    head = "".join(f"<th>{html.escape(title)}</th>" for title, *_ in columns)
    body = "".join(f"<tr><th>{html.escape(name)}</th>"
                   + "".join(f"<td>{cell(frame, prefix, number, name)}</td>" for _, frame, prefix, number in columns)
                   + "</tr>" for name in names)
    return ("<h3>Reported metrics</h3><p class='why'>metric.report: computed on the same images as the objective, "
            "named metric@extractor; they decide nothing in the search.</p>"
            f"<table class='reported'><tr><th></th>{head}</tr>{body}</table>")


def _edges(d: StudyData) -> str:
    note = edge_note(d.edges)
    return "" if note is None else f"<p class='why edges'>{html.escape(note)}</p>"


def _section(d: StudyData) -> str:
    from skipsearch.dashboards import figures

    parts = [f"<section id='study-{html.escape(d.name)}'><h2>{html.escape(d.name)}</h2>", _facts(d),
             f"<p class='verdict {'win' if d.verdict.win else 'nowin'}'><b>Verdict.</b> "
             f"{html.escape(d.verdict.text)}</p>", _edges(d), _reported(d)]
    for fig_def in figures.STUDY_FIGURES:
        fig = fig_def.build(d)
        if fig is None:
            continue
        parts.append(f"<h3>{html.escape(fig_def.title)}</h3><p class='why'>{html.escape(fig_def.caption)}</p>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{fig_def.id}-{d.name}"))
    shown = "best search trial" if d.verdict.trial is None else (
        "winner" if d.verdict.win else "best confirmed candidate (no win claimed)")
    parts.append("<h3>Samples: baseline and " + shown + "</h3><p class='why'>The first samples, same seeds: "
                 "compare image by image.</p><div class='grids'>"
                 + _img(d.grids.get("baseline"), "baseline")
                 + _img(d.grids.get("winner"), f"{shown} (trial {d.shown_trial})") + "</div></section>")
    return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table.facts th { text-align: left; padding-right: 1em; font-weight: 600; }
table.reported th, table.reported td { text-align: right; padding: 0 .6em; }
p.verdict { padding: .6em; border-left: 4px solid #888; background: #f6f6f6; }
p.verdict.win { border-color: #2a7; } p.why { color: #555; font-size: .9em; }
.grids { display: flex; gap: 2em; } figure img { image-rendering: pixelated; width: 320px; }
p.missing { width: 320px; height: 80px; background: #eee; text-align: center; padding-top: 2em; }
"""


def render(studies: list[StudyData]) -> str:
    """The page: one section per study, then (for several) their winners side by side."""
    import plotly.offline

    from skipsearch.dashboards import figures

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>skipsearch report: "
            f"{html.escape(', '.join(d.name for d in studies))}</title><style>{STYLE}</style>"
            f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>")
    parts = [head, f"<h1>skipsearch report</h1><p>{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}, "
                   f"written {stamp}.</p>"]
    if len(studies) > 1:
        fig = figures.comparison(studies)
        parts.append("<h2>Studies compared</h2><p class='why'>Each winner's held-out dFID against its own "
                     "baseline, with its 95% paired interval. FIDs from different extractors are not comparable; "
                     "the extractor is in each label.</p>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id="comparison"))
    parts += [_section(d) for d in studies]
    parts.append("</body></html>")
    return "".join(parts)


def report(storage: str | None, studies: list[str], path: str | Path) -> Path:
    """Write the report on ``studies`` (names in one database) to ``path``, atomically."""
    if not studies:
        raise UserError("name at least one study")
    if len(set(studies)) != len(studies):
        raise UserError(f"a study is named twice: {', '.join(studies)}")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give a file name, e.g. {path / 'report.html'}")
    if not path.parent.is_dir():
        raise UserError(f"-o {path}: the folder {path.parent} does not exist")
    url = urls.choose(storage)
    urls.parse(url)
    data = [gather(url, name) for name in studies]
    return atomic_write_text(path, render(data))
