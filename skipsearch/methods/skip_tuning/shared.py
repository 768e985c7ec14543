"""Where a Skip-Tuning trial's trajectory is the baseline's (``skipsearch.diffusion.trajectories``).

A ``time_window`` schedule scales by exactly 1 outside its window, so every sampler step whose network calls
all fall outside it computes what the baseline computes. The window is tested on the noise levels the hooks
themselves read (asked of the model, as a VP model's hooks see a converted timestep), with the schedule's own
comparison, so "outside" means what it means when the hooks run.
"""

from __future__ import annotations

from typing import Any

import torch

from skipsearch.diffusion.generation import SamplerConfig, hook_sigmas
from skipsearch.diffusion.trajectories import Sharing, cache_for
from skipsearch.methods.skip_tuning.schedules import _Schedule


def baseline_steps(schedule: _Schedule, model: Any, sampler: SamplerConfig, shape: tuple[int, ...],
                   device: torch.device, labels: list[int] | None) -> int:
    """How many leading sampler steps call the network with rho = 1 at every skip (all of them for rho = 1)."""
    from skipsearch.models import family_of

    if sampler.scheduler:
        return 0
    if schedule.is_identity():
        return sampler.steps
    if schedule.active(torch.ones(1, dtype=torch.float64)) is None:
        return 0
    family = family_of(model)
    seen = hook_sigmas(model, sampler, shape, device, labels, family.hook_root(model), family.sigma_of(model))
    if seen is None:
        return 0
    for k, calls in enumerate(seen):
        if bool(schedule.active(torch.tensor(calls, dtype=torch.float64)).any()):
            return k
    return len(seen)


def sharing(spec: Any, schedule: _Schedule, ev: Any, task: Any) -> Sharing | None:
    """A trial's use of the shared trajectories: only in a ``time_window`` study (elsewhere no trial shares
    steps with the baseline, and keeping its states would only cost memory), with the cache on."""
    search = spec.search
    if search.family != "time_window" or search.trajectory_cache_mb == 0 or task.sampler.scheduler:
        return None
    if not isinstance(schedule, _Schedule):
        return None
    info, model = ev.loaded.info, ev.loaded.denoiser
    labels = task.labels(range(task.seed_start, task.seed_start + 1), info.conditions)
    steps = baseline_steps(schedule, model, task.sampler, info.shape, ev.device, labels)
    return Sharing(steps=steps, cache=cache_for(model, search.trajectory_cache_mb))
