"""Faster feature-extraction precisions against fp32, on the same images: what they save, and what they cost.

For the spec's extractor network, every precision this device computes (skipsearch.precisions: bf16 and
channels_last everywhere, tf32 on an Ampere or newer GPU) is compared with fp32 on

- speed: fp32's time over the precision's to extract one batch of the model's samples (median of rounds,
  after a warm-up), so above 1 is faster;
- FID: the model's samples against an evenly spaced subset of the reference images, FID computed from each
  precision's own features of both; reported as |FID_p - FID_fp32| / FID_fp32.

No targets: the issue asks for these figures to be measured and reported, and sets no bound. A precision's
FIDs carry their own extractor label whatever these figures say, so they never mix with fp32's.
"""

from __future__ import annotations

import statistics as stats

import torch

from skipsearch.bench.clock import seconds
from skipsearch.bench.measurements import Record
from skipsearch.metrics import FeatureExtractor, fid, statistics
from skipsearch.metrics.features import supported_precisions
from skipsearch.precisions import DEFAULT, extractor_label, split_label


def spaced(images: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` images evenly spaced through the set (all of it when it is smaller): a deterministic subset
    that still covers a data set stored class by class."""
    if len(images) <= count:
        return images
    return images[torch.linspace(0, len(images) - 1, count).round().long()]


def _timings(extractors: dict[str, FeatureExtractor], batch: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds per precision to extract ``batch``; precisions interleaved within each round, so a
    noisy machine slows all of them alike."""
    device = next(iter(extractors.values())).device
    for fx in extractors.values():
        fx(batch, batch_size=len(batch))  # warm-up: allocator, kernels, autocast caches
    times: dict[str, list[float]] = {p: [] for p in extractors}
    for _ in range(rounds):
        for p, fx in extractors.items():
            times[p].append(seconds(lambda fx=fx: fx(batch, batch_size=len(batch)), device))
    return {p: stats.median(t) for p, t in times.items()}


def _fid(fx: FeatureExtractor, samples: torch.Tensor, reference: torch.Tensor, batch_size: int) -> float:
    """FID of the samples against the reference images, both through this extractor (no cache: the point is
    to extract at this precision)."""
    return fid(fx(samples, batch_size=batch_size), statistics(fx(reference, batch_size=batch_size), with_sqrt=True))


def bench_precision(extractor: str, samples: torch.Tensor, reference: torch.Tensor, device: str | torch.device,
                    batch_size: int = 500, limit: int = 500, rounds: int = 3) -> list[Record]:
    """Records of each faster precision of ``extractor``'s network against fp32 (module docstring): at most
    ``limit`` samples (the first) against as many reference images (evenly spaced)."""
    network = split_label(extractor)[0]
    device = torch.device(device)
    samples, reference = samples[:limit], spaced(reference, limit)
    precisions = supported_precisions(device)
    extractors = {p: FeatureExtractor(extractor_label(network, p), device=str(device)) for p in precisions}
    batch = samples[: min(batch_size, len(samples))]
    times = _timings(extractors, batch, rounds)
    fids = {p: _fid(fx, samples, reference, batch_size) for p, fx in extractors.items()}
    what = f"{len(samples)} samples vs {len(reference)} reference images"
    print(f"  precisions of {network} ({what}; time per batch of {len(batch)}, median of {rounds}): "
          + "; ".join(f"{p} {times[p] * 1e3:.1f} ms FID {fids[p]:.6g}" for p in precisions), flush=True)
    out = [Record.judged(f"precision: FID {network} fp32 ({what})", fids[DEFAULT], None, str(device))]
    for p in precisions:
        if p == DEFAULT:
            continue
        label = extractor_label(network, p)
        deviation = abs(fids[p] - fids[DEFAULT]) / max(abs(fids[DEFAULT]), 1e-12)
        out += [Record.judged(f"precision: {label} features, fp32 time / {p} time (speed)",
                              times[DEFAULT] / times[p], None, str(device)),
                Record.judged(f"precision: {label} |FID - FID fp32| / FID fp32 ({what})", deviation, None,
                              str(device))]
    return out
