"""From the database to a coefficient file, and from a file back to a model (apply) and to its FID (verify)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from torch import nn

from skipsearch import coeffile
from skipsearch.adapters import Applied, apply_coefficients
from skipsearch.errors import UserError
from skipsearch.evaluate import EvalTask, build_evaluator
from skipsearch.generate import SamplerConfig
from skipsearch.skip import _Schedule
from skipsearch.storage import Store
from skipsearch.confirm import coefficients_of, confirmation_table


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
            "seed_sets": [{"seed_start": int(r.seed_start), "fid": float(r.fid)} for r in conf.itertuples()]},
        "versions": json.loads(row["versions_json"]),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def export(store: Store, study: str, path: str | Path, fmt: str | None = None, trial: int | None = None) -> Path:
    row = chosen_trial(store, study, trial)
    cf = coeffile.CoefficientFile(coefficients_of(row), provenance(store, study, row))
    return coeffile.write(cf, path, fmt)


def apply(model: nn.Module, coefficients: str | Path | _Schedule) -> Applied:
    """Put coefficients (or a coefficient file's) on a model; use as ``with apply(model, f):`` or ``.remove()``."""
    if isinstance(coefficients, (str, Path)):
        coefficients = coeffile.read(coefficients).coefficients
    return apply_coefficients(model, coefficients)


def verify(path: str | Path, device: str = "cpu") -> dict:
    """Reproduce a file's recorded search FID: fresh model, ``apply()`` of the file, the recorded seeds."""
    cf = coeffile.read(path)
    p = cf.provenance
    try:
        sampler, metric, search = SamplerConfig(**p["sampler"]), p["metric"], p["search"]
        task = EvalTask(p["model"]["id"], sampler, metric["extractor"], metric["reference"], search["n"],
                        search["seed_start"], metric["batch_size"], metric["kid_subset_size"], device,
                        tuple(metric.get("rungs", ())))
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: provenance lacks what verify needs ({err})") from None
    ev = build_evaluator(task.model, task.extractor, task.dataset, device)
    if ev.loaded.info.weights_hash != p["model"]["hash"]:
        raise UserError(f"{path}: model {task.model} has weights {ev.loaded.info.weights_hash}, "
                        f"the file was recorded with {p['model']['hash']}")
    with apply(ev.loaded.denoiser, path):
        *_, result = ev.ladder(task, None, progress=True)
    return {"recorded_fid": search["fid"], "reproduced_fid": result.fid, "recorded_kid": search["kid"],
            "reproduced_kid": result.kid, "reference_hash_match": result.ref_hash == metric["reference_hash"]}
