"""Skip-Tuning coefficients (Ma et al., ICML 2024): cat([h, s_i]) becomes cat([h, rho_i * s_i]).

Skips are indexed i = 0 (outermost, highest resolution) .. k (innermost, next to the bottleneck).
Coefficients are frozen pydantic models, so they serialise to YAML/JSON/TOML and load back equal.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from skipsearch.errors import UserError

RHO_MAX = 10.0  # a skip scaled beyond 10x is no longer a tuning; files and specs are refused above it
SIGMA_LIMIT = 1e4  # noise levels above this are not an EDM-style schedule
Rho = Annotated[float, Field(gt=0, le=RHO_MAX)]
Sigma = Annotated[float, Field(gt=0, le=SIGMA_LIMIT)]


class _Schedule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def depth_profile(self, n_skips: int) -> list[float]:
        raise NotImplementedError

    def active(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """Where (per sample) the profile applies; None means at every noise level."""
        return None

    def rhos(self, n_skips: int, sigma: torch.Tensor) -> list[torch.Tensor | float]:
        """rho_i for each skip; a tensor (B, 1, 1, 1) where it depends on the per-sample sigma."""
        profile, mask = self.depth_profile(n_skips), self.active(sigma)
        if mask is None:
            return list(profile)
        mask = mask.reshape(-1, 1, 1, 1)
        return [torch.where(mask, torch.tensor(r, dtype=sigma.dtype), torch.tensor(1.0, dtype=sigma.dtype))
                for r in profile]

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

    def depth_profile(self, n_skips: int) -> list[float]:
        return _linear(self.rho_top, self.rho_bottom, n_skips)

    def is_identity(self) -> bool:
        return self.rho_top == 1.0 and self.rho_bottom == 1.0


class PerLevelSkip(_Schedule):
    """One free rho per skip, outermost first."""

    family: Literal["per_level"] = "per_level"
    rho: tuple[Rho, ...] = Field(min_length=1, max_length=256)

    def depth_profile(self, n_skips: int) -> list[float]:
        if len(self.rho) != n_skips:
            raise UserError(f"per_level coefficients give {len(self.rho)} rho values; the model has {n_skips} skips")
        return list(self.rho)

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

    def depth_profile(self, n_skips: int) -> list[float]:
        return _linear(self.rho_top, self.rho_bottom, n_skips)

    def active(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma >= self.sigma_lo) & (sigma <= self.sigma_hi)

    def is_identity(self) -> bool:
        return self.rho_top == 1.0 and self.rho_bottom == 1.0


SkipSchedule = Annotated[Union[LinearSkip, PerLevelSkip, TimeWindowSkip], Field(discriminator="family")]
FAMILIES = ("linear", "per_level", "time_window")  # parsing from JSON: skipsearch.coefficients.parse
