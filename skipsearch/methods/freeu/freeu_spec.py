"""The spec of a FreeU study: the ranges of b and s, and optionally a Skip-Tuning schedule searched with them.

```yaml
kind: freeu
search:
  b_range: [1.0, 1.6]   # b1 and b2 (FreeU's published Stable Diffusion values: b1 1.3-1.5, b2 1.4-1.6)
  s_range: [0.2, 1.0]   # s1 and s2 (published: s1 0.9, s2 0.2)
  combine_skip: true    # also search a Skip-Tuning schedule, applied together with FreeU
  skip: {family: linear, rho_range: [0.8, 1.2]}
```

Both ranges must contain 1, so that the baseline (FreeU off: b = s = 1) is a point of the space.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationInfo, field_validator

from skipsearch.methods.freeu.factors import OFF_VALUE, Factor
from skipsearch.methods.skip_tuning.skip_spec import SkipSearchSpec
from skipsearch.spec import SearchCommon, Spec


class FreeUSearchSpec(SearchCommon):
    b_range: tuple[Factor, Factor] = (1.0, 1.6)
    s_range: tuple[Factor, Factor] = (0.2, 1.0)
    combine_skip: bool = False
    skip: SkipSearchSpec = SkipSearchSpec()  # the Skip-Tuning part, with combine_skip only

    @field_validator("b_range", "s_range")
    @classmethod
    def _contains_off(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        lo, hi = value
        if not lo <= OFF_VALUE <= hi or lo == hi:
            raise ValueError(f"{info.field_name} must be [low, high] with low < high and 1 inside (the baseline, "
                             f"FreeU off, is b = s = 1), got [{lo}, {hi}]")
        return value

    @field_validator("skip")
    @classmethod
    def _skip_part(cls, value: SkipSearchSpec, info: ValidationInfo) -> SkipSearchSpec:
        """Compared with the defaults, not with what was written: a stored spec (every field dumped) reads back."""
        if not info.data.get("combine_skip") and value != SkipSearchSpec():
            raise ValueError("the Skip-Tuning ranges are searched only with search.combine_skip: true")
        budget = [k for k in SearchCommon.model_fields if getattr(value, k) != SkipSearchSpec.model_fields[k].default]
        if budget:
            raise ValueError(f"{', '.join(budget)}: set in the search section itself, not in search.skip")
        return value


class FreeUSpec(Spec):
    kind: Literal["freeu"] = "freeu"
    search: FreeUSearchSpec = FreeUSearchSpec()
