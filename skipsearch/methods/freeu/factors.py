"""FreeU coefficients (Si et al., CVPR 2024), alone or with a Skip-Tuning schedule.

``FreeU(b1, b2, s1, s2)``: in the first two up stages of the UNet (``up_blocks.0`` and ``up_blocks.1``,
the deepest first), ``b`` multiplies half of the backbone feature channels and ``s`` multiplies the
lowest frequencies of the skip features in Fourier space. This is not a uniform rho on a skip.

b = s = 1 is not the identity bit for bit in diffusers (the skip features still go through an FFT and back),
so ``FreeU(b1=1, b2=1, s1=1, s2=1)`` is defined here as FreeU OFF: ``is_identity()`` is true and applying it
leaves the model untouched. This is the baseline of a FreeU study. Any other value switches FreeU on.

``SkipFreeU(skip, freeu)``: a Skip-Tuning schedule and FreeU applied together, all or nothing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from skipsearch.methods.method import Coefficients
from skipsearch.methods.skip_tuning.schedules import SkipSchedule

FACTOR_MAX = 3.0  # diffusers treats 0 as FreeU off, so factors are positive; beyond 3 is no longer a tuning
Factor = Annotated[float, Field(gt=0, le=FACTOR_MAX)]
KEYS = ("b1", "b2", "s1", "s2")  # the Optuna parameter names too: part of a study's history
OFF_VALUE = 1.0  # b1 = b2 = s1 = s2 = 1: FreeU off


class FreeU(Coefficients):
    """b1, b2: backbone factors of up stages 1 and 2; s1, s2: their skips' low-frequency factors."""

    family: Literal["freeu"] = "freeu"
    b1: Factor
    b2: Factor
    s1: Factor
    s2: Factor

    @classmethod
    def off(cls) -> FreeU:
        return cls(**{k: OFF_VALUE for k in KEYS})

    def factors(self) -> dict[str, float]:
        """The keyword arguments of diffusers' ``enable_freeu``."""
        return {k: getattr(self, k) for k in KEYS}

    def is_identity(self) -> bool:
        """FreeU off: all four factors exactly 1 (applying it changes nothing)."""
        return all(getattr(self, k) == OFF_VALUE for k in KEYS)

    def describe(self) -> str:
        return "freeu: off" if self.is_identity() else super().describe()


class SkipFreeU(Coefficients):
    """A Skip-Tuning schedule on the skips, and FreeU on the first two up stages."""

    family: Literal["skip_freeu"] = "skip_freeu"
    skip: SkipSchedule
    freeu: FreeU

    def is_identity(self) -> bool:
        return self.skip.is_identity() and self.freeu.is_identity()

    def describe(self) -> str:
        return f"skip_freeu: [{self.skip.describe()}] [{self.freeu.describe()}]"


FREEU_TYPES: tuple[type[Coefficients], ...] = (FreeU, SkipFreeU)
