"""FID with its 1/N bias taken out by Richardson extrapolation: ``2 FID_N - (FID_a + FID_b) / 2``, where a and b
are the two halves of the N samples.

FID computed on N samples is biased upwards by about c/N (Chong and Forsyth, CVPR 2020), with c depending on the
samples' own spread, so it differs between two candidates: under common random numbers the bias does not cancel in
a paired ΔFID. On the 19-NFE README demo (studies/demo-skip-19nfe.yaml) it was -8.4/N in ΔFID (the candidate's
features spread less than the baseline's), 40% of the true gain at N = 500. If FID_N = FID_inf + c/N, each half has
FID_inf + 2c/N, and the combination above is FID_inf, from the same samples: no sampling beyond the N already
drawn, two more Fréchet distances. Measured on that demo (16 held-out seed sets of 2,000), the corrected paired
ΔFID at N = 500 agreed with N = 2,000's to within 0.0003 and its spread was 1-2% above the plain ΔFID's. Chong and
Forsyth's own estimate (a line fitted over many subset sizes) is also unbiased, but its spread was 1.4-1.9 times
larger.

The halves are the first and the second N/2 samples in seed order, so every candidate's halves hold the same
seeds. The held-out confirmation judges this number (``search.confirm``); any spec may report it.
"""

from __future__ import annotations

from skipsearch.metrics.distance import fid
from skipsearch.metrics.metric import Inputs, Metric


def fid_debiased(samples, stats) -> float:
    """``2 FID_N - (FID_first_half + FID_second_half) / 2`` of ``samples`` (N, d) against ``stats``."""
    n = len(samples)
    if n < 4:
        raise ValueError(f"a debiased FID needs at least 4 samples (two halves of 2), got {n}")
    half = n // 2
    return 2 * fid(samples, stats) - (fid(samples[:half], stats) + fid(samples[half: 2 * half], stats)) / 2


def _compute(x: Inputs) -> dict[str, float]:
    return {"fid_debiased": fid_debiased(x.samples, x.stats)}


FID_DEBIASED = Metric(name="fid_debiased", values=("fid_debiased",), uses=frozenset({"stats"}), compute=_compute)
