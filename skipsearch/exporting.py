"""From the database to a coefficient file, and from a file back to a model (apply) and to its FID (verify)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from skipsearch import coeffile
from skipsearch.adapters import Applied, apply_coefficients
from skipsearch.confirm import coefficients_of, confirmation_table
from skipsearch.difftuning import DiffTuningWeights
from skipsearch.errors import UserError
from skipsearch.evaluate import EvalTask, build_evaluator
from skipsearch.generate import SamplerConfig
from skipsearch.models import file_hash
from skipsearch.storage import Store


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


def provenance(store: Store, study: str, row: dict) -> dict:
    spec = store.study_spec(study)
    table = confirmation_table(store, study, spec["confirm"]["n"])
    mine = table[table.trial_number == row["trial_number"]] if not table.empty else table
    conf = store.confirmations_frame(study)
    conf = conf[(conf.trial_number == row["trial_number"]) & (conf.n == spec["confirm"]["n"])]
    return {
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
    row = chosen_trial(store, study, trial)
    cf = coeffile.CoefficientFile(coefficients_of(row), provenance(store, study, row))
    return coeffile.write(cf, path, fmt)


class LoadedWeights:
    """Fine-tuned weights loaded into a model; ``remove()`` (or leaving ``with``) puts the old ones back."""

    def __init__(self, model: nn.Module, path: Path, expected_hash: str | None):
        if not path.is_file():
            raise UserError(f"fine-tuned weights not found: {path} (the coefficient file names it)")
        if expected_hash and file_hash(path) != expected_hash:
            raise UserError(f"{path}: its hash {file_hash(path)} differs from the recorded {expected_hash}")
        net = getattr(model, "net", model)
        self.model, self._old = net, {k: v.detach().clone() for k, v in net.state_dict().items()}
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise UserError(f"{path} does not fit this model: {str(err).splitlines()[0]}") from None

    def remove(self) -> None:
        if self._old is not None:
            self.model.load_state_dict(self._old)
            self._old = None

    def __enter__(self) -> LoadedWeights:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def apply(model: nn.Module, coefficients: str | Path | BaseModel) -> Applied | LoadedWeights:
    """Put coefficients (or a coefficient file's) on a model; use as ``with apply(model, f):`` or ``.remove()``.

    A Diff-Tuning file loads its fine-tuned weights (``weights_only=True``, hash checked) instead.
    """
    provenance = {}
    if isinstance(coefficients, (str, Path)):
        cf = coeffile.read(coefficients)
        coefficients, provenance = cf.coefficients, cf.provenance
    if isinstance(coefficients, DiffTuningWeights):
        weights = provenance.get("weights") or {}
        if not weights.get("path"):
            raise UserError("Diff-Tuning weights are applied from a coefficient file that names its weights file")
        return LoadedWeights(model, Path(weights["path"]), weights.get("sha256_16"))
    return apply_coefficients(model, coefficients)


def verify(path: str | Path, device: str = "cpu") -> dict:
    """Reproduce a file's recorded search FID: fresh model, ``apply()`` of the file, the recorded seeds."""
    cf = coeffile.read(path)
    p = cf.provenance
    try:
        sampler, metric, search = SamplerConfig(**p["sampler"]), p["metric"], p["search"]
        task = EvalTask(p["model"]["id"], sampler, metric["extractor"], metric["reference"], search["n"],
                        search["seed_start"], metric["batch_size"], metric["kid_subset_size"], device,
                        tuple(metric.get("rungs", ())), tuple((p.get("sampling_classes") or {}).get("target", ())))
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: provenance lacks what verify needs ({err})") from None
    ev = build_evaluator(task.model, task.extractor, task.dataset, device)
    if ev.loaded.info.weights_hash != p["model"]["hash"]:  # the pre-trained weights, for Diff-Tuning
        raise UserError(f"{path}: model {task.model} has weights {ev.loaded.info.weights_hash}, "
                        f"the file was recorded with {p['model']['hash']}")
    with apply(ev.loaded.denoiser, path):
        *_, result = ev.ladder(task, None, progress=True)
    return {"recorded_fid": search["fid"], "reproduced_fid": result.fid, "recorded_kid": search["kid"],
            "reproduced_kid": result.kid, "reference_hash_match": result.ref_hash == metric["reference_hash"]}
