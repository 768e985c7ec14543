"""The spec of a Skip-Tuning study: which schedule family is searched, over which ranges."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from skipsearch.methods.skip_tuning.schedules import SCHEDULE_FORMS
from skipsearch.spec import Rho, SearchCommon, Sigma, Spec


MAX_TRIALS_PER_BATCH = 64


class SkipSearchSpec(SearchCommon):
    operational: ClassVar[frozenset[str]] = SearchCommon.operational | {"batch_trials", "trajectory_cache_mb"}
    family: Literal[SCHEDULE_FORMS] = "linear"  # type: ignore[valid-type]
    rho_range: tuple[Rho, Rho] = (0.5, 1.5)
    sigma_range: tuple[Sigma, Sigma] = (0.002, 80.0)
    # trials sharing one network batch (in-process drivers): a number, or "auto" (1 on a CPU; measured on a GPU)
    batch_trials: Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_TRIALS_PER_BATCH)] = "auto"
    # time_window: host memory for the baseline's states that trials start from before their window opens; 0 = off
    trajectory_cache_mb: Annotated[int, Field(ge=0, le=2**20)] = 1024

    @model_validator(mode="after")
    def _ranges(self) -> SkipSearchSpec:
        lo, hi = self.rho_range
        if not lo < 1.0 < hi:
            raise ValueError(f"rho_range must contain 1 strictly inside (the baseline), got [{lo}, {hi}]")
        if self.sigma_range[0] >= self.sigma_range[1]:
            raise ValueError("sigma_range must be increasing")
        return self


class SkipTuningSpec(Spec):
    kind: Literal["skip_tuning"] = "skip_tuning"
    search: SkipSearchSpec = SkipSearchSpec()
