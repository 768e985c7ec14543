"""What ``skipsearch bench`` times for a study's spec: the suites its method names (``Method.bench_suites``).

The methods name their suites and never import them, so the benchmarks, which drive whole studies, sit above
everything they time and nothing below imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skipsearch.bench.measurements import Record
from skipsearch.errors import UserError
from skipsearch.methods import method_for
from skipsearch.specfile import load_spec


@dataclass(frozen=True, kw_only=True)
class Run:
    """One ``skipsearch bench`` over a spec: ``quick`` leaves out the 2048-d FID timing and the precisions."""

    spec_path: Path
    trials: int
    use_ray: bool
    quick: bool


def _trials(run: Run) -> list[Record]:
    from skipsearch.bench.whole_trials import bench_trial

    return bench_trial(run.spec_path, run.trials)


def _batch_sharing(run: Run) -> list[Record]:
    from skipsearch.bench.batch_sharing import bench_batched

    return bench_batched(run.spec_path)


def _parts(run: Run) -> list[Record]:
    from skipsearch.bench.parts import bench_parts

    return bench_parts(run.spec_path, wide=not run.quick)


def _workers(run: Run) -> list[Record]:
    if not run.use_ray:
        return []
    from skipsearch.bench.workers import bench_ray

    return bench_ray(run.spec_path, max(run.trials, 2))


def _trajectory_sharing(run: Run) -> list[Record]:
    from skipsearch.bench.trajectory_sharing import bench_trajectories

    return bench_trajectories(run.spec_path)


def _finetuning(run: Run) -> list[Record]:
    from skipsearch.bench.finetuning import bench_difftuning

    return bench_difftuning(run.spec_path)


# Each suite imports its module when it runs: one spec's bench never pays for another method's.
SUITES: dict[str, Callable[[Run], list[Record]]] = {
    "trials": _trials, "batch_sharing": _batch_sharing, "parts": _parts, "workers": _workers,
    "trajectory_sharing": _trajectory_sharing, "finetuning": _finetuning,
}


def bench_spec(spec_path: Path, trials: int, use_ray: bool, quick: bool = False) -> list[Record]:
    """Every suite the spec's method names, in its order; ``--ray`` on a method without Ray trials is refused."""
    method = method_for(load_spec(spec_path).kind)
    if use_ray and "workers" not in method.bench_suites:
        raise UserError(f"--ray benchmarks trials on Ray workers; {method.kind} studies run in-process")
    run = Run(spec_path=Path(spec_path), trials=trials, use_ray=use_ray, quick=quick)
    return [record for name in method.bench_suites for record in SUITES[name](run)]
