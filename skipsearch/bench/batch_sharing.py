"""Trials sharing network batches against the same trials one at a time: throughput and agreement."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import optuna

from skipsearch.bench.measurements import Record
from skipsearch.evaluate import resolve_device
from skipsearch.methods import Coefficients, method_for
from skipsearch.resolve import resolve
from skipsearch.search.trial_steps import trial_ladder
from skipsearch.spec import Spec
from skipsearch.specfile import load_spec


def _points(spec: Spec, count: int) -> list[Coefficients]:
    """``count`` coefficient sets drawn at random from the spec's space (seeded)."""
    method, info = method_for(spec.kind), resolve(spec, "bench").info
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [method.suggest(study.ask(), spec, info) for _ in range(count)]


def _final_fids_alone(spec: Spec, points: list[Coefficients]) -> list[float]:
    return [list(trial_ladder(spec, c))[-1].score.fid for c in points]


def _final_fids_batched(spec: Spec, points: list[Coefficients]) -> list[float]:
    last: dict[int, float] = {}
    for results in method_for(spec.kind).trial_batch(spec, points):
        last.update({k: r.score.fid for k, r in results.items() if hasattr(r, "score")})
    return [last[k] for k in range(len(points))]


def bench_batched(spec_path: Path, trials: int = 4, rounds: int = 2) -> list[Record]:
    """``trials`` trials in shared batches against the same trials one at a time (medians of ``rounds``
    alternating runs after a warm-up): the throughput ratio (target >= 4 on a GPU; a CPU is already busy with
    one trial, so there it is only reported) and the largest relative FID difference between the two."""
    spec = load_spec(spec_path)
    method = method_for(spec.kind)
    try:
        method.trial_batch(spec, [])
    except NotImplementedError:
        print(f"batched trials: {method.title} trials do not share batches; left out", flush=True)
        return []
    device = resolve_device(spec.device)
    points = _points(spec, trials)
    alone, batched = _final_fids_alone(spec, points), _final_fids_batched(spec, points)  # warm-up
    times: dict[str, list[float]] = {"alone": [], "batched": []}
    for r in range(rounds):
        for side in ("alone", "batched") if r % 2 == 0 else ("batched", "alone"):
            begun = time.perf_counter()
            fids = (_final_fids_alone if side == "alone" else _final_fids_batched)(spec, points)
            times[side].append(time.perf_counter() - begun)
            alone, batched = (fids, batched) if side == "alone" else (alone, fids)
    speedup = statistics.median(times["alone"]) / statistics.median(times["batched"])
    worst = max(abs(b - a) / abs(a) for a, b in zip(alone, batched))
    print(f"batched trials: {trials} trials of {spec.model.model_id} at N={spec.metric.n} one at a time "
          f"{statistics.median(times['alone']):.3f} s, in shared batches {statistics.median(times['batched']):.3f} s "
          f"(x{speedup:.2f}); largest relative FID difference {worst:.3g}", flush=True)
    target = ">= 4" if device.startswith("cuda") else None
    return [Record.judged(f"batched trials: throughput, {trials} in shared batches / one at a time", speedup,
                          target, device),
            Record.judged("batched trials: largest relative FID difference from alone", worst, None, device)]
