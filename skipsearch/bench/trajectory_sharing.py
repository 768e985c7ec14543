"""Shared trajectories against the same time-window trials computed whole: network evaluations saved, time, and
agreement (``skipsearch.diffusion.trajectories``)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import optuna

from skipsearch.bench.measurements import Record
from skipsearch.diffusion.trajectories import cache_for
from skipsearch.evaluate import evaluator_for, resolve_device
from skipsearch.methods import method_for
from skipsearch.methods.sampled import eval_task
from skipsearch.resolve import resolve
from skipsearch.search.trial_steps import trial_ladder
from skipsearch.spec import Spec
from skipsearch.specfile import load_spec


def _windowed(spec: Spec, cache_mb: int) -> Spec:
    """The spec as a time-window study (whatever family it searches), with the cache on or off."""
    search = spec.search.model_copy(update={"family": "time_window", "trajectory_cache_mb": cache_mb})
    return spec.model_copy(update={"search": search})


def _run(spec: Spec, points: list) -> tuple[list[float], int, int]:
    """Final FIDs of the points (the baseline first), evaluations saved, evaluations in all (samples x NFE)."""
    fids, saved, total = [], 0, 0
    for c in points:
        *_, last = trial_ladder(spec, c)
        fids.append(last.score.fid)
        saved += last.score.evaluations_saved
        total += last.score.n * last.score.nfe
    return fids, saved, total


def bench_trajectories(spec_path: Path, trials: int = 6, rounds: int = 2) -> list[Record]:
    """The baseline then ``trials`` time windows drawn at random (seeded) from the spec's space, with the shared
    states (from an empty cache each round) and without, alternating (medians of ``rounds`` after a warm-up)."""
    base_spec = load_spec(spec_path)
    if base_spec.sampler.config().scheduler:
        print("shared trajectories: a diffusers scheduler's state is more than x; left out", flush=True)
        return []
    on, off = _windowed(base_spec, max(base_spec.search.trajectory_cache_mb, 1024)), _windowed(base_spec, 0)
    method, info = method_for(on.kind), resolve(on, "bench").info
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = [method.suggest(optuna.trial.FixedTrial(method.baseline(on, info)), on, info)]
    points += [method.suggest(study.ask(), on, info) for _ in range(trials)]
    model = evaluator_for(eval_task(on, n=on.metric.n, seed_start=on.metric.seed)).loaded.denoiser

    def shared() -> tuple[list[float], int, int]:
        cache_for(model, on.search.trajectory_cache_mb).clear()
        return _run(on, points)

    shared()
    _run(off, points)  # warm-up
    times: dict[str, list[float]] = {"shared": [], "whole": []}
    results: dict[str, tuple[list[float], int, int]] = {}
    for r in range(rounds):
        for side in ("shared", "whole") if r % 2 == 0 else ("whole", "shared"):
            begun = time.perf_counter()
            results[side] = shared() if side == "shared" else _run(off, points)
            times[side].append(time.perf_counter() - begun)
    (fids_on, saved, total), (fids_off, _, _) = results["shared"], results["whole"]
    worst = max(abs(a - b) / abs(b) for a, b in zip(fids_on, fids_off))
    speed = statistics.median(times["whole"]) / statistics.median(times["shared"])
    device = resolve_device(on.device)
    print(f"shared trajectories: baseline + {trials} time windows of {on.model.model_id} at N={on.metric.n}: "
          f"{saved:,} of {total:,} network evaluations from the baseline's states ({saved / total:.1%}); whole "
          f"{statistics.median(times['whole']):.2f} s, shared {statistics.median(times['shared']):.2f} s "
          f"(x{speed:.2f}); largest relative FID difference {worst:.3g}", flush=True)
    return [Record.judged(f"shared trajectories: share of network evaluations saved (baseline + {trials} windows)",
                          saved / total, None, device),
            Record.judged("shared trajectories: wall time whole / shared", speed, None, device),
            Record.judged("shared trajectories: largest relative FID difference from whole", worst, None, device)]
