"""Benchmarks measured side by side in one run, printed as ratios so a noisy machine does not mislead."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from skipsearch import study as _study
from skipsearch.spec import load_spec


def bench_trial(spec_path: Path, n_trials: int = 3) -> dict:
    """Wall time of whole trials (ask, evaluate, record, tell) against their network + feature time."""
    spec = load_spec(spec_path)
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec.model_copy(update={"name": "bench", "storage": f"sqlite:///{Path(tmp) / 'bench.db'}"})
        ctx = _study.open_study(spec)
        _study.ensure_baseline(ctx)
        _study.run_trial(ctx)  # warm-up: model, extractor and reference statistics load once per worker
        rows = []
        for _ in range(n_trials):
            start = time.perf_counter()
            _, result, reason = _study.run_trial(ctx)
            wall = time.perf_counter() - start
            if result is None:
                raise RuntimeError(f"benchmark trial failed: {reason}")
            rows.append((wall, result.timings.get("network", 0.0), result.timings.get("features", 0.0)))
        ctx.store.close()
    wall, net, feat = (statistics.median(col) for col in zip(*rows))
    other = wall - net - feat
    print(f"trial benchmark: {spec.model.name}, {spec.sampler.name} {spec.sampler.steps} steps "
          f"({spec.sampler.config().nfe} NFE), N={spec.metric.n}, device {ctx.device}, median of {n_trials} trials")
    print(f"  trial wall time            {wall:8.3f} s")
    print(f"  network forward passes     {net:8.3f} s")
    print(f"  feature extraction         {feat:8.3f} s")
    print(f"  everything else            {other:8.3f} s  (Optuna, database, FID/KID, bookkeeping)")
    print(f"  (network + features)/wall  {(net + feat) / wall:8.3f}")
    verdict = "met" if other / wall < 0.10 else "MISSED"
    print(f"  everything else / wall     {other / wall:8.3f}  target < 0.10: {verdict}")
    return {"wall_s": wall, "network_s": net, "features_s": feat, "other_fraction": other / wall}
