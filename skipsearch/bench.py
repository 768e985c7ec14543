"""Benchmarks measured side by side in one run, printed as ratios so a noisy machine does not mislead.

A method may bring its own (``Method.bench``); these two time any method's trials.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from skipsearch.evaluate import evaluator, resolve_device
from skipsearch.search import driver as _study
from skipsearch.search.context import StudyContext
from skipsearch.spec import load_spec


def bench_trial(spec_path: Path, n_trials: int = 3) -> dict:
    """Wall time of whole trials (ask, evaluate, record, tell) against their network + feature time."""
    spec = load_spec(spec_path)
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec.model_copy(update={"name": "bench", "storage": f"sqlite:///{Path(tmp) / 'bench.db'}"})
        ctx = _study.open_study(spec, spec.storage, echo=lambda line: None)
        try:
            # warm-up: model, extractor and reference statistics load once per worker
            _study.run_trial(ctx, _study.reserve(ctx, n_trials + 1))
            rows = []
            for _ in range(n_trials):
                start = time.perf_counter()
                done = _study.run_trial(ctx, _study.reserve(ctx, n_trials + 1))
                wall = time.perf_counter() - start
                if done.rung is None:
                    raise RuntimeError(f"benchmark trial failed: {done.reason}")
                timings = done.rung.timings
                rows.append((wall, timings.get("network", 0.0), timings.get("features", 0.0)))
        finally:
            ctx.close()
    wall, net, feat = (statistics.median(col) for col in zip(*rows))
    other = wall - net - feat
    print(f"trial benchmark: {spec.model.name}, {spec.sampler.name} {spec.sampler.steps} steps "
          f"({spec.sampler.config().nfe} NFE), N={spec.metric.n}, device {resolve_device(spec.device)}, "
          f"median of {n_trials} trials")
    print(f"  trial wall time            {wall:8.3f} s")
    print(f"  network forward passes     {net:8.3f} s")
    print(f"  feature extraction         {feat:8.3f} s")
    print(f"  everything else            {other:8.3f} s  (Optuna, database, FID/KID, bookkeeping)")
    print(f"  (network + features)/wall  {(net + feat) / wall:8.3f}")
    verdict = "met" if other / wall < 0.10 else "MISSED"
    print(f"  everything else / wall     {other / wall:8.3f}  target < 0.10: {verdict}")
    return {"wall_s": wall, "network_s": net, "features_s": feat, "other_fraction": other / wall}


def bench_ray(spec_path: Path, m: int = 8) -> dict[str, float]:
    """The same M trials in-process and on a local Ray with 1 and 2 workers (1 CPU, so 1 thread, each)."""
    import ray

    from skipsearch.search.ray_tune import Placement, search_on_ray

    spec = load_spec(spec_path)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": m})})
    quiet = lambda line: None  # noqa: E731
    walls: dict[str, float] = {}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        def study(name: str) -> StudyContext:
            return _study.open_study(spec.model_copy(update={"name": name}), f"sqlite:///{Path(tmp) / name}.db",
                                     echo=quiet)

        for n_threads in (1, threads):
            torch.set_num_threads(n_threads)
            evaluator.cache_clear()  # each run loads the model once, as each Ray worker does
            ctx, start = study(f"inproc{n_threads}"), time.perf_counter()
            _study.search(ctx, m)
            walls[f"in-process, {n_threads} thread(s)"] = time.perf_counter() - start
            ctx.close()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start = time.perf_counter() - start
        try:
            for workers in (1, 2):
                ctx, start = study(f"ray{workers}"), time.perf_counter()
                search_on_ray(ctx, m, Placement(workers=workers, cpus_per_trial=1.0))
                walls[f"Ray, {workers} worker(s) x 1 CPU"] = time.perf_counter() - start
                ctx.close()
        finally:
            ray.shutdown()
    one, inproc1 = walls["Ray, 1 worker(s) x 1 CPU"], walls["in-process, 1 thread(s)"]
    print(f"Ray benchmark: {m} trials of {spec.name} ({spec.sampler.name} {spec.sampler.steps} steps, "
          f"N={spec.metric.n}) on this machine; Ray's own start ({ray_start:.1f} s) is not counted")
    for name, wall in walls.items():
        print(f"  {name:32s} {wall:8.1f} s")
    print(f"  Ray 1 worker / in-process (1 thread each)  {one / inproc1:6.3f}   target <= 1.15")
    print(f"  Ray 1 worker / 2 workers (speed-up)         {one / walls['Ray, 2 worker(s) x 1 CPU']:6.3f}"
          f"   target >= 1.6")
    return walls


HEAVY = ("optuna", "ray", "sqlalchemy", "typer", "pandas")


def bench_imports(repeats: int = 5) -> dict[str, float]:
    """What a user's sampling code pays for ``skipsearch.apply``: its import time against torch's alone, each
    in a fresh interpreter, interleaved (medians), and which of the driver's heavy libraries it loads."""
    import json
    import subprocess
    import sys

    report = f"import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    codes = {"torch": "import torch", "skipsearch.apply": "import skipsearch; skipsearch.apply"}
    walls: dict[str, list[float]] = {name: [] for name in codes}
    outputs: dict[str, str] = {}
    for _ in range(repeats):
        for name, code in codes.items():
            start = time.perf_counter()
            outputs[name] = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True,
                                           text=True, check=True).stdout
            walls[name].append(time.perf_counter() - start)
    loaded = json.loads(outputs["skipsearch.apply"].strip().splitlines()[-1])
    torch_s, apply_s = (statistics.median(walls[name]) for name in codes)
    print(f"import benchmark: fresh interpreters, median of {repeats} interleaved runs")
    print(f"  python -c 'import torch'                          {torch_s:6.2f} s")
    print(f"  python -c 'import skipsearch; skipsearch.apply'   {apply_s:6.2f} s")
    verdict = "met" if apply_s / torch_s <= 1.5 else "MISSED"
    print(f"  skipsearch.apply / torch                          {apply_s / torch_s:6.2f}   target <= 1.5: {verdict}")
    print(f"  heavy libraries loaded by skipsearch.apply: {', '.join(loaded) or 'none'} (of {', '.join(HEAVY)})")
    return {"torch_s": torch_s, "apply_s": apply_s, "ratio": apply_s / torch_s}
