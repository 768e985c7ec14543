"""The same trials in-process and on a local Ray with 1 and 2 workers."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import torch

from skipsearch.bench.measurements import Record
from skipsearch.evaluate import evaluator
from skipsearch.search import driver as _study
from skipsearch.search.context import StudyContext
from skipsearch.specfile import load_spec


def bench_ray(spec_path: Path, m: int = 8) -> list[Record]:
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
            # each run loads the model once, as each Ray worker does: with the evaluators gone, so is their
            # model copy (evaluate.loaded_on holds none itself)
            evaluator.cache_clear()
            gc.collect()
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
          f"   target >= 1.6", flush=True)
    two = walls["Ray, 2 worker(s) x 1 CPU"]
    return [Record.judged("Ray: 1 worker / in-process, 1 thread each (wall ratio)", one / inproc1, "<= 1.15", "cpu"),
            Record.judged("Ray: 2 workers' speed-up over 1", one / two, ">= 1.6", "cpu")]


