"""Diff-Tuning's searched coefficients: one trial's fine-tuning recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from skipsearch.methods.method import Coefficients
from skipsearch.spec import STEPS_MAX


class DiffTuningWeights(Coefficients):
    """One trial's fine-tuning recipe. s = 0 and r = 0 is plain fine-tuning (the study's baseline)."""

    family: Literal["diff_tuning"] = "diff_tuning"
    s: float = Field(1.0, ge=0, le=100)  # reconsolidation exponent: new-domain batch draws u ~ u^s
    s_prime: float = Field(1.0, ge=0, le=100)  # retention exponent: bank batch draws u ~ (1-u)^s'
    r: float = Field(0.2, ge=0.0, lt=1.0)  # bank fraction of each batch
    lam: float = Field(0.1, ge=0, le=1000)  # retention weight
    lr: float = Field(1e-4, gt=0, le=1)
    steps: int = Field(1000, ge=1, le=STEPS_MAX)

    def is_plain(self) -> bool:
        return self.s == 0 and self.r == 0

    def bank_count(self, batch_size: int) -> int:
        return min(batch_size - 1, round(self.r * batch_size))

    def describe(self) -> str:
        if self.is_plain():  # s' and lambda do nothing without a bank
            return f"plain fine-tuning: lr={self.lr:.4g} steps={self.steps}"
        return super().describe()
