"""The samplers a spec may name, in one table, so that adding one is one entry here (plus, for an ODE sampler of
skipsearch's own, its function in ``samplers.SAMPLERS``; a diffusers scheduler needs nothing else).

The spec validates ``sampler.name`` against this table, provenance lists the settings each kind reads, resolve
checks that the kind can drive the model, and generation and the NFE count read it too; none of them names a
sampler. Standard library only: parsing a spec imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

KARRAS = ("sigma_min", "sigma_max", "rho")  # EDM's time steps (Karras et al. 2022): read by the ODE samplers only


@dataclass(frozen=True)
class SamplerKind:
    """One sampler. ``drives``: ``denoiser`` is an ODE over EDM's sigma on any family's denoiser D(x, sigma), on
    Karras time steps; ``scheduler`` is a diffusers scheduler on a discrete-time model, built from the model's
    training-schedule config the way its own pipeline builds it (``scheduler_class`` with ``scheduler_options``)."""

    name: str
    drives: Literal["denoiser", "scheduler"]
    calls_per_step: int = 1  # network evaluations per step (Heun: a predictor and a corrector)
    last_step_calls: int = 1  # the step to sigma = 0 (Heun's last step is Euler's)
    scheduler_class: str | None = None
    scheduler_options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def settings(self) -> tuple[str, ...]:
        """The spec's sampler fields it reads besides ``steps`` and guidance: what provenance lists."""
        return KARRAS if self.drives == "denoiser" else ()

    def nfe(self, steps: int) -> int:
        """Network evaluations for ``steps`` steps, without guidance (which doubles them)."""
        return self.calls_per_step * (steps - 1) + self.last_step_calls


SAMPLER_KINDS: dict[str, SamplerKind] = {k.name: k for k in (
    SamplerKind("heun", "denoiser", calls_per_step=2),
    SamplerKind("euler", "denoiser"),
    SamplerKind("ddim", "scheduler", scheduler_class="DDIMScheduler"),
    SamplerKind("dpmpp_2m", "scheduler", scheduler_class="DPMSolverMultistepScheduler",
                scheduler_options={"algorithm_type": "dpmsolver++", "solver_order": 2}),
    SamplerKind("euler_discrete", "scheduler", scheduler_class="EulerDiscreteScheduler"),
)}
NAMES = tuple(SAMPLER_KINDS)


def kind_of(name: str) -> SamplerKind:
    """The table's entry; the spec has validated the name, so a miss here is a bug."""
    return SAMPLER_KINDS[name]


def names_that(drives: str) -> tuple[str, ...]:
    """The samplers of one kind, for messages ('samples with heun or euler')."""
    return tuple(k.name for k in SAMPLER_KINDS.values() if k.drives == drives)
