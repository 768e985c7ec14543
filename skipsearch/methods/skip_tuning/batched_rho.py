"""The rho of every sample when several trials' schedules share one network batch (``evaluate.Evaluator.trials``).

Each trial's depth profile is fitted to the skips once, into a table of one row per trial; per network call the
rows are picked by each sample's trial (the batch layout), and a trial with a time window keeps rho = 1 outside
it, sample by sample. Values and comparisons are those of the schedule alone (float32 rho, float64 sigma), so a
sample is scaled exactly as it would be in its own trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from skipsearch.batch_layout import BatchLayout
from skipsearch.methods.skip_tuning.schedules import Skip, TimeWindowSkip, _Schedule


def batch_rhos(schedules: Sequence[_Schedule], skips: Sequence[Skip],
               layout: BatchLayout) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """rho_i per sample for each skip i, as a function of the per-sample sigma; a schedule that does not fit the
    skips raises here (UserError), before any hook is on."""
    table = torch.tensor([s.depth_profile(skips) for s in schedules], dtype=torch.float32)  # (trials, skips)
    windowed = any(isinstance(s, TimeWindowSkip) for s in schedules)
    bounds = torch.tensor([[s.sigma_lo, s.sigma_hi] if isinstance(s, TimeWindowSkip) else [-math.inf, math.inf]
                           for s in schedules], dtype=torch.float64)
    on: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def rhos(sigma: torch.Tensor) -> list[torch.Tensor]:
        if sigma.device not in on:
            on[sigma.device] = table.to(sigma.device), bounds.to(sigma.device), torch.ones((), device=sigma.device)
        rows, limits, one = on[sigma.device]
        owner = layout.owners(sigma.numel(), sigma.device)
        per_sample = rows[owner]  # (B, skips)
        if windowed:
            lo, hi = limits[owner].unbind(1)
            inside = (sigma >= lo) & (sigma <= hi)
            per_sample = torch.where(inside.reshape(-1, 1), per_sample, one)
        return [per_sample[:, i].reshape(-1, 1, 1, 1) for i in range(per_sample.shape[1])]

    return rhos
