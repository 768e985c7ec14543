"""From the database to a coefficient file: the chosen trial, its coefficients and its provenance."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from skipsearch.errors import UserError
from skipsearch.exchange import coeffile
from skipsearch.exchange.provenance import Provenance
from skipsearch.methods import method_for
from skipsearch.search.heldout import coefficients_of, heldout_summary
from skipsearch.search.stored_spec import read_stored
from skipsearch.search.verdict import Verdict, interval_of, verdict
from skipsearch.spec import Spec
from skipsearch.storage import Store
from skipsearch.storage.facts import study_facts
from skipsearch.storage.records import TrialRow


def stored_spec(store: Store, study: str) -> Spec:
    """The spec a study holds, read through today's spec models: its science as created, its operational fields
    (the confirmation's plan, budgets) as the latest run gave them (``Store.follow_spec``)."""
    spec = read_stored(store, study)
    if spec is None:
        raise UserError(f"no study named {study!r} in {store.shown_url}")
    return spec


def chosen_trial(store: Store, study: str, trial: int | None = None) -> TrialRow:
    """The requested trial, else the confirmed winner, else the best completed search trial."""
    stored_spec(store, study)
    if trial is None:
        trial = store.winner(study)
    if trial is None:
        frame = store.trials_frame(study)
        done = frame[frame.state == "COMPLETE"]
        if done.empty:
            raise UserError(f"study {study!r} has no completed trial yet")
        trial = int(done.sort_values("fid").trial_number.iloc[0])
    row = store.trial(study, trial)
    if row is None or row.state != "COMPLETE":
        raise UserError(f"study {study!r} has no completed trial number {trial}")
    return row


def provenance(store: Store, study: str, row: TrialRow, table: pd.DataFrame | None = None,
               judged: Verdict | None = None) -> Provenance:
    """What reproduces the trial's FID, and the held-out evidence for it, as a schema; the method adds its own.
    ``table``: the study's ``heldout_summary`` at ``confirm.n``, when the caller has it already, and ``judged``
    its verdict (``best`` shows the same one, so it is judged once). The model's facts
    (its skip points) come from the database, so a study of a model handed over in memory exports in any process."""
    spec = stored_spec(store, study)
    method = method_for(spec.kind)
    references = method.references(spec)
    table = heldout_summary(store, study, spec.confirm.n, references) if table is None else table
    mine = table[table.trial_number == row.trial_number] if not table.empty else table
    conf = store.confirmations_frame(study)
    conf = conf[(conf.trial_number == row.trial_number) & (conf.n == spec.confirm.n)]
    trials = store.trials_frame(study)
    trial = trials[trials.trial_number == row.trial_number].iloc[0]  # with the method's own columns
    m = spec.metric
    record = {
        "study": study, "trial": row.trial_number, "role": row.role, "storage": store.shown_url,
        "model": {"id": row.model_id, "hash": row.model_hash, "spec": spec.model.model_dump(mode="json")},
        "sampler": json.loads(row.sampler_json), "nfe": row.nfe,
        "metric": {"extractor": row.extractor, "reference": m.reference, "rungs": list(m.rungs),
                   "reference_hash": row.ref_hash, "batch_size": m.batch_size, "kid_subset_size": m.kid_subset_size},
        "search": {"n": row.n, "seed_start": row.seed_start, "fid": row.fid, "kid": row.kid,
                   "delta_fid": row.delta_fid},
        "confirmation": None if mine.empty else {
            "n": int(mine.n.iloc[0]), "heldout_fid": float(mine.heldout_fid.iloc[0]),
            "delta_fid": float(mine.delta_fid.iloc[0]), "delta_fid_std": float(mine.delta_fid_std.iloc[0]),
            **_interval(mine.iloc[0]), **_opinion(mine.iloc[0]),
            "seed_sets": [{"seed_start": int(r.seed_start), "fid": float(r.fid)}
                          | method.heldout_provenance(spec, r) for _, r in conf.iterrows()]},
        "verdict": _verdict(table, references, row.trial_number, judged),
        "versions": json.loads(row.versions_json),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    heldout = {} if mine.empty else mine.iloc[0].to_dict()
    info = study_facts(store, study, spec.model)  # as stored with the study: the model itself may be gone
    return Provenance.model_validate(record | method.provenance(spec, trial, heldout, info))


def _verdict(table: pd.DataFrame, references, trial: int, judged: Verdict | None = None) -> dict | None:
    """The study's verdict, as ``best`` says it, and whether it claims a win for ``trial`` (a trial exported with
    ``--trial`` is not the one the verdict judges, so it is no claimed win either); None before any confirmation."""
    if table.empty:
        return None
    judged = verdict(table, references) if judged is None else judged
    return {"claimed_win": bool(judged.win and judged.trial == trial), "text": judged.text}


def _opinion(row) -> dict:
    """The second feature space's paired debiased dFID for this trial against the baseline (``second_opinion``),
    where one was taken on it."""
    if pd.isna(row.get("opinion_delta_fid", float("nan"))):
        return {}
    low, high = row.opinion_low, row.opinion_high
    return {"second_opinion": {"extractor": row.opinion_extractor, "n": int(row.opinion_n),
                               "seed_sets": int(row.opinion_seed_sets), "delta": float(row.opinion_delta_fid),
                               "low": None if pd.isna(low) else float(low),
                               "high": None if pd.isna(high) else float(high)}}


def _interval(row) -> dict:
    """The confirmation's interval: the fixed design's paired t interval, or a raced confirmation's judgement (its
    plain t interval would ignore the race's looks, so it is not given)."""
    if "race_status" not in row or pd.isna(row.race_status):
        ci = interval_of(row)
        return {"delta_fid_low": ci.low, "delta_fid_high": ci.high}

    def number(value) -> float | None:
        return None if pd.isna(value) else float(value)

    if pd.isna(row.race_delta_fid):  # the baseline: nothing raced against itself
        return {}
    return {"race": {"delta": float(row.race_delta_fid), "low": number(row.race_low),
                     "high": number(row.race_high), "seed_sets": int(row.race_rounds),
                     "status": row.race_status, "decision": row.race_text}}


@dataclass(frozen=True)
class Exported:
    """A written coefficient file and the provenance it holds: the CLI says from it whether the file is a claimed
    win."""

    path: Path
    provenance: Provenance

    @property
    def claimed_win(self) -> bool:
        return self.provenance.verdict is not None and self.provenance.verdict.claimed_win

    def caution(self) -> str | None:
        """What a user should know before applying the file, or None for a claimed win."""
        if self.claimed_win:
            return None
        p = self.provenance
        if p.verdict is None:
            return (f"trial {p.trial} has no held-out confirmation: its FID is the search's own, on seeds the search "
                    f"chose it by")
        return f"no win is claimed for trial {p.trial}; the study's verdict: {p.verdict.text}"


def export(store: Store, study: str, path: str | Path, fmt: str | None = None,
           trial: int | None = None) -> Exported:
    coeffile.format_of(Path(path), fmt)  # an unknown format is refused before the database is read
    row = chosen_trial(store, study, trial)
    cf = coeffile.CoefficientFile(coefficients_of(row), provenance(store, study, row))
    return Exported(coeffile.write(cf, path, fmt), cf.provenance)


