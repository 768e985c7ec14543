"""From the database to a coefficient file (export), and from a file back to its FID (verify)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from skipsearch import coeffile
from skipsearch.applying import apply
from skipsearch.confirm import coefficients_of, confirmation_table
from skipsearch.errors import UserError
from skipsearch.evaluate import EvalTask, build_evaluator
from skipsearch.generate import SamplerConfig
from skipsearch.provenance import Provenance
from skipsearch.resolve import check_registered
from skipsearch.storage import Store

DEFAULT_TOLERANCE = 1e-4  # relative: a reproduction on the same kind of device agrees to ~1e-7


def chosen_trial(store: Store, study: str, trial: int | None = None) -> dict:
    """The requested trial, else the confirmed winner, else the best completed search trial."""
    spec = store.study_spec(study)
    if spec is None:
        raise UserError(f"no study named {study!r} in {store.shown_url}")
    frame = store.trials_frame(study)
    done = frame[frame.state == "COMPLETE"]
    if trial is None:
        trial = store.winner(study)
    if trial is None:
        if done.empty:
            raise UserError(f"study {study!r} has no completed trial yet")
        trial = int(done.sort_values("fid").trial_number.iloc[0])
    row = store.trial(study, trial)
    if row is None or row["state"] != "COMPLETE":
        raise UserError(f"study {study!r} has no completed trial number {trial}")
    return row


def provenance(store: Store, study: str, row: dict) -> Provenance:
    spec = store.study_spec(study)
    table = confirmation_table(store, study, spec["confirm"]["n"])
    mine = table[table.trial_number == row["trial_number"]] if not table.empty else table
    conf = store.confirmations_frame(study)
    conf = conf[(conf.trial_number == row["trial_number"]) & (conf.n == spec["confirm"]["n"])]
    record = {
        "study": study, "trial": row["trial_number"], "role": row["role"], "storage": store.shown_url,
        "model": {"id": row["model_id"], "hash": row["model_hash"]},
        "sampler": json.loads(row["sampler_json"]), "nfe": row["nfe"],
        "metric": {"extractor": row["extractor"], "reference": spec["metric"]["reference"],
                   "rungs": spec["metric"].get("rungs", []),
                   "reference_hash": row["ref_hash"], "batch_size": spec["metric"]["batch_size"],
                   "kid_subset_size": spec["metric"]["kid_subset_size"]},
        "search": {"n": row["n"], "seed_start": row["seed_start"], "fid": row["fid"], "kid": row["kid"],
                   "delta_fid": row["delta_fid"]},
        "confirmation": None if mine.empty else {
            "n": int(mine.n.iloc[0]), "heldout_fid": float(mine.heldout_fid.iloc[0]),
            "delta_fid": float(mine.delta_fid.iloc[0]), "delta_fid_std": float(mine.delta_fid_std.iloc[0]),
            "seed_sets": [{"seed_start": int(r.seed_start), "fid": float(r.fid)}
                          | ({} if pd.isna(r.train_seed) else {"train_seed": int(r.train_seed),
                                                                "source_fid": float(r.source_fid)})
                          for r in conf.itertuples()]},
        "versions": json.loads(row["versions_json"]),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    } | (_diff_tuning_provenance(spec, row, mine) if spec.get("kind") == "diff_tuning" else {})
    return Provenance.model_validate(record)


def _diff_tuning_provenance(spec: dict, row: dict, mine) -> dict:
    """The fine-tuned weights (path and hash), the recipe's data and budget, the labels FIDs were sampled
    with (class-conditional models), and the forgetting (source) FID."""
    from skipsearch.finetuning import class_plan
    from skipsearch.models import load_model

    target_classes, source_classes = class_plan(load_model(row["model_id"]).info, spec["finetune"]["data"])
    weights = None if not row.get("weights_path") else {
        "path": str(Path(row["weights_path"]).resolve()), "sha256_16": row["weights_hash"]}
    return {"weights": weights, "finetune": spec["finetune"],
            "sampling_classes": {"target": list(target_classes), "source": list(source_classes)},
            "source": {"reference": spec["finetune"]["source_reference"], "fid": row["source_fid"],
                       "kid": row["source_kid"],
                       "heldout_fid": None if mine.empty else float(mine.heldout_source_fid.iloc[0])}}


def export(store: Store, study: str, path: str | Path, fmt: str | None = None, trial: int | None = None) -> Path:
    coeffile.format_of(Path(path), fmt)  # an unknown format is refused before the database is read
    row = chosen_trial(store, study, trial)
    cf = coeffile.CoefficientFile(coefficients_of(row), provenance(store, study, row))
    return coeffile.write(cf, path, fmt)


@dataclass(frozen=True)
class Verification:
    """A coefficient file's recorded search FID against the one reproduced from it now."""

    recorded_fid: float
    reproduced_fid: float
    recorded_kid: float
    reproduced_kid: float
    reference_hash_match: bool
    tolerance: float  # relative to max(1, |recorded FID|)

    @property
    def difference(self) -> float:
        return abs(self.reproduced_fid - self.recorded_fid)

    @property
    def allowed(self) -> float:
        return self.tolerance * max(1.0, abs(self.recorded_fid))

    @property
    def ok(self) -> bool:
        return self.difference <= self.allowed


def _names(p: Provenance, path: Path) -> None:
    """What the provenance names exists here: model, extractor, reference data set."""
    check_registered(str(path), "provenance", ("provenance.model.id", p.model.id),
                     ("provenance.metric.extractor", p.metric.extractor),
                     [("provenance.metric.reference", p.metric.reference)])


def check(path: str | Path) -> tuple[coeffile.CoefficientFile, Provenance]:
    """Everything ``verify`` checks before sampling: the file, its schema and the names it holds."""
    path = Path(path)
    cf = coeffile.read(path)
    if cf.provenance is None:
        raise UserError(f"{path}: invalid coefficient file\n  provenance: missing; verify needs the provenance that "
                        f"`skipsearch export` writes")
    _names(cf.provenance, path)
    return cf, cf.provenance


def verify(path: str | Path, device: str = "cpu", tolerance: float = DEFAULT_TOLERANCE) -> Verification:
    """Reproduce a file's recorded search FID: fresh model, ``apply()`` of the file, the recorded seeds."""
    if not 0 <= tolerance < 1:
        raise UserError(f"tolerance must be in [0, 1), got {tolerance}")
    _, p = check(path)
    m, s = p.metric, p.search
    task = EvalTask(p.model.id, SamplerConfig(**p.sampler.model_dump()), m.extractor, m.reference, s.n, s.seed_start,
                    m.batch_size, m.kid_subset_size, device, tuple(m.rungs),
                    tuple(p.sampling_classes.target) if p.sampling_classes else ())
    if task.kid_subset_size > min(task.ladder):
        raise UserError(f"{path}: invalid provenance\n  provenance.metric.kid_subset_size: "
                        f"{task.kid_subset_size} exceeds the smallest N ({min(task.ladder)})")
    ev = build_evaluator(task.model, task.extractor, task.dataset, device)
    if ev.loaded.info.weights_hash != p.model.hash:  # the pre-trained weights, for Diff-Tuning
        raise UserError(f"{path}: model {task.model} has weights {ev.loaded.info.weights_hash}, "
                        f"the file was recorded with {p.model.hash}")
    with apply(ev.loaded.denoiser, path):
        *_, result = ev.ladder(task, None, progress=True)
    return Verification(s.fid, result.fid, s.kid, result.kid, result.ref_hash == m.reference_hash, tolerance)
