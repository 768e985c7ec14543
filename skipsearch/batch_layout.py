"""Which trial each row of a shared network batch belongs to.

A ladder samples K >= 1 trials at once (``evaluate.Evaluator.trials``): one chunk of noise repeated K times, copy
c carrying trial ``alive[c]``'s coefficients. Batched hooks (``methods.skip_tuning.batched_rho``) read the layout
to give each row its own trial's coefficients; a trial that stops (pruned or failed) is dropped from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BatchLayout:
    """The trials of the current network batch, in row order. The ladder sets ``per_trial`` (the chunk's size)
    before each chunk and drops trials that stop."""

    alive: list[int]
    per_trial: int = 0
    _owners: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    def owners(self, rows: int, device: torch.device) -> torch.Tensor:
        """The trial of each of a network call's ``rows`` rows (made once per shape and device). A call with
        guidance in one batch holds the chunk twice (unconditional and conditional), hence the modulo."""
        key = (rows, device, self.per_trial, tuple(self.alive))
        if key not in self._owners:
            group = len(self.alive) * self.per_trial
            if group == 0 or rows % group:
                raise RuntimeError(f"a network call of {rows} rows does not hold the {len(self.alive)} trials' "
                                   f"chunks of {self.per_trial} samples")
            row_trial = torch.arange(rows) % group // self.per_trial
            self._owners[key] = torch.tensor(self.alive)[row_trial].to(device)
        return self._owners[key]

    def drop(self, trials: set[int]) -> None:
        if trials:
            self.alive = [k for k in self.alive if k not in trials]
            self._owners.clear()
