"""FID at infinite N (Chong & Forsyth, CVPR 2020): FID_N is biased upward roughly in proportion to 1/N, so
fit FID_N = FID_inf + slope / N over the sample counts a trial was scored at and read the intercept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Extrapolation:
    fid_inf: float
    slope: float  # FID units per 1/N
    points: int


def fid_infinity(ns: Sequence[int], fids: Sequence[float]) -> Extrapolation | None:
    """Least-squares line in 1/N; None with fewer than two distinct N (no line to draw)."""
    pairs = [(1.0 / float(n), float(f)) for n, f in zip(ns, fids, strict=True) if n > 0]
    if len({x for x, _ in pairs}) < 2:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    slope = sum((x - mx) * (y - my) for x, y in pairs) / sum((x - mx) ** 2 for x, _ in pairs)
    return Extrapolation(fid_inf=my - slope * mx, slope=slope, points=len(pairs))
