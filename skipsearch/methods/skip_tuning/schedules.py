"""Skip-Tuning coefficients (Ma et al., ICML 2024): cat([h, s_i]) becomes cat([h, rho_i * s_i]).

Skips are indexed i = 0 (outermost, highest resolution) .. k (innermost, next to the bottleneck), and each
has a resolution level (a UNet may have several skips per level). ``linear`` runs over the skip index,
``per_level`` gives one rho per level. Coefficients are frozen pydantic models, so they serialise to
YAML/JSON/TOML and load back equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Literal, Protocol, Union

from pydantic import Field, model_validator

from skipsearch.errors import UserError
from skipsearch.methods.method import Coefficients
from skipsearch.spec import Rho, Sigma

if TYPE_CHECKING:  # torch where rho meets a network: reading coefficients from a file or a database needs none
    import torch


class Skip(Protocol):
    """What a schedule needs of a skip: its index (0 = outermost) and its resolution level."""

    index: int
    level: int


class _Schedule(Coefficients):
    def depth_profile(self, skips: Sequence[Skip]) -> list[float]:
        """rho for each skip, in index order; a schedule that does not fit the model raises UserError."""
        raise NotImplementedError

    def active(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """Where (per sample) the profile applies; None means at every noise level."""
        return None

    def rhos(self, skips: Sequence[Skip]) -> list[float] | Callable[[torch.Tensor], list[torch.Tensor | float]]:
        """rho_i for each skip: numbers where they hold at every noise level, else a function of the per-sample
        sigma giving tensors (B, 1, 1, 1) on sigma's device. The profile is fitted to the skips once, here."""
        import torch

        profile = self.depth_profile(skips)
        if self.active(torch.ones(1)) is None:
            return profile
        varying = [i for i, r in enumerate(profile) if r != 1.0]
        tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

        def window(sigma: torch.Tensor) -> list[torch.Tensor | float]:
            """Per call: one mask and one ``where`` over every varying skip, on sigma's device, from tables made
            once per device (no host scalars, no host-to-device copies, nothing that waits for the device)."""
            if sigma.device not in tables:
                rows = torch.tensor([profile[i] for i in varying], dtype=torch.float32).reshape(-1, 1)
                tables[sigma.device] = rows.to(sigma.device), torch.ones((), device=sigma.device)
            rows, one = tables[sigma.device]
            per_sample = torch.where(self.active(sigma).reshape(1, -1), rows, one)  # (varying skips, B)
            out: list[torch.Tensor | float] = [1.0] * len(profile)
            for row, i in enumerate(varying):
                out[i] = per_sample[row].reshape(-1, 1, 1, 1)
            return out

        return window

    def is_identity(self) -> bool:
        return False


def _linear(rho_top: float, rho_bottom: float, n_skips: int) -> list[float]:
    k = n_skips - 1
    return [rho_top + (i / k) * (rho_bottom - rho_top) if k else rho_top for i in range(n_skips)]


class LinearSkip(_Schedule):
    """rho_i = rho_top + (i/k)(rho_bottom - rho_top), the paper's schedule, at every noise level."""

    family: Literal["linear"] = "linear"
    rho_top: Rho = 1.0
    rho_bottom: Rho = 1.0

    def depth_profile(self, skips: Sequence[Skip]) -> list[float]:
        return _linear(self.rho_top, self.rho_bottom, len(skips))

    def is_identity(self) -> bool:
        return self.rho_top == 1.0 and self.rho_bottom == 1.0


class PerLevelSkip(_Schedule):
    """One free rho per resolution level, highest resolution (outermost) first; every skip of a level gets it."""

    family: Literal["per_level"] = "per_level"
    rho: tuple[Rho, ...] = Field(min_length=1, max_length=256)

    def depth_profile(self, skips: Sequence[Skip]) -> list[float]:
        levels = sorted({s.level for s in skips})
        if len(self.rho) != len(levels):
            raise UserError(f"per_level coefficients give {len(self.rho)} rho values; the model has {len(levels)} "
                            f"resolution levels")
        at = dict(zip(levels, self.rho))
        return [at[s.level] for s in sorted(skips, key=lambda s: s.index)]

    def is_identity(self) -> bool:
        return all(r == 1.0 for r in self.rho)


class TimeWindowSkip(_Schedule):
    """The linear depth profile inside sigma_lo <= sigma <= sigma_hi, and rho = 1 outside."""

    family: Literal["time_window"] = "time_window"
    rho_top: Rho = 1.0
    rho_bottom: Rho = 1.0
    sigma_lo: Sigma
    sigma_hi: Sigma

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindowSkip:
        if self.sigma_lo >= self.sigma_hi:
            raise ValueError(f"sigma_lo ({self.sigma_lo}) must be below sigma_hi ({self.sigma_hi})")
        return self

    def depth_profile(self, skips: Sequence[Skip]) -> list[float]:
        return _linear(self.rho_top, self.rho_bottom, len(skips))

    def active(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma >= self.sigma_lo) & (sigma <= self.sigma_hi)

    def is_identity(self) -> bool:
        return self.rho_top == 1.0 and self.rho_bottom == 1.0


SCHEDULES: tuple[type[_Schedule], ...] = (LinearSkip, PerLevelSkip, TimeWindowSkip)
SkipSchedule = Annotated[Union[SCHEDULES], Field(discriminator="family")]
# The forms a schedule may take; ``search.family`` and the coefficients' ``family`` field (stored JSON) name them.
SCHEDULE_FORMS = ("linear", "per_level", "time_window")
