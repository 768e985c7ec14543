"""Whole trials of a spec: wall time against the network and feature time inside them."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from skipsearch.bench.measurements import Record
from skipsearch.evaluate import resolve_device
from skipsearch.search import driver as _study
from skipsearch.search.budget import reserve
from skipsearch.specfile import load_spec


def bench_trial(spec_path: Path, n_trials: int = 3) -> list[Record]:
    """Wall time of whole trials (ask, evaluate, record, tell) against their network + feature time."""
    spec = load_spec(spec_path)
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec.model_copy(update={"name": "bench", "storage": f"sqlite:///{Path(tmp) / 'bench.db'}"})
        ctx = _study.open_study(spec, spec.storage, echo=lambda line: None)
        try:
            # warm-up: model, extractor and reference statistics load once per worker
            _study.run_trial(ctx, reserve(ctx, n_trials + 1))
            rows = []
            for _ in range(n_trials):
                start = time.perf_counter()
                done = _study.run_trial(ctx, reserve(ctx, n_trials + 1))
                wall = time.perf_counter() - start
                if done.rung is None:
                    raise RuntimeError(f"benchmark trial failed: {done.reason}")
                timings = done.rung.timings
                rows.append((wall, timings.get("network", 0.0), timings.get("features", 0.0)))
        finally:
            ctx.close()
    wall, net, feat = (statistics.median(col) for col in zip(*rows))
    other = wall - net - feat
    print(f"trial benchmark: {spec.model.model_id}, {spec.sampler.name} {spec.sampler.steps} steps "
          f"({spec.sampler.config().nfe} NFE), N={spec.metric.n}, device {resolve_device(spec.device)}, "
          f"median of {n_trials} trials")
    print(f"  trial wall time            {wall:8.3f} s")
    print(f"  network forward passes     {net:8.3f} s")
    print(f"  feature extraction         {feat:8.3f} s")
    print(f"  everything else            {other:8.3f} s  (Optuna, database, FID/KID, bookkeeping)")
    print(f"  (network + features)/wall  {(net + feat) / wall:8.3f}")
    verdict = "met" if other / wall < 0.05 else "MISSED"
    print(f"  everything else / wall     {other / wall:8.3f}  target < 0.05: {verdict}", flush=True)
    device = resolve_device(spec.device)
    return [Record.judged("trial: share of wall time outside network and features", other / wall, "< 0.05", device),
            Record.judged("trial: wall time (s)", wall, None, device),
            Record.judged("trial: network forward passes (s)", net, None, device),
            Record.judged("trial: feature extraction (s)", feat, None, device)]


