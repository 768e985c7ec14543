"""A trial's parts side by side with their bare equivalents, on the spec's own model, sampler and features:

- the sampler against a bare loop replaying the same network calls on the same tensors;
- skipsearch's feature extraction against torch-fidelity's extractor called directly on the same batches;
- the FID and KID distances against torch-fidelity's own functions (time and agreement), on the spec's
  features and on 2048-d features (the Inception layer's size) below and above N = d;
- common random numbers: the spread of the FID difference between two fixed settings with shared seeds
  against independent seeds, at the search N;
- the extractor's faster precisions against fp32: speed and FID deviation (skipsearch.bench.precision).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from skipsearch import data
from skipsearch.bench.clock import device_syncs, seconds
from skipsearch.bench.precision import bench_precision
from skipsearch.bench.measurements import Record
from skipsearch.diffusion.generation import generate
from skipsearch.evaluate import EvalTask, Evaluator, build_evaluator, resolve_device
from skipsearch.metrics import Statistics, fid, kid, statistics as feature_statistics
from skipsearch.spec import Spec
from skipsearch.specfile import load_spec


def _side_by_side(a: Callable[[], object], b: Callable[[], object], device: torch.device,
                  rounds: int) -> tuple[float, float]:
    """Medians of ``rounds`` alternating runs of a and b (after one warm-up of each)."""
    seconds(a, device), seconds(b, device)
    times_a, times_b = [], []
    for r in range(rounds):
        for fn, times in ((a, times_a), (b, times_b)) if r % 2 == 0 else ((b, times_b), (a, times_a)):
            times.append(seconds(fn, device))
    return statistics.median(times_a), statistics.median(times_b)


def _task(spec: Spec, device: str) -> EvalTask:
    m = spec.metric
    return EvalTask(model=spec.model, sampler=spec.sampler.config(), extractor=m.extractor, dataset=m.reference,
                    n=m.n, seed_start=m.seed, batch_size=m.batch_size, kid_subset_size=m.kid_subset_size,
                    device=device)


def bench_sampler(ev: Evaluator, task: EvalTask, rounds: int) -> tuple[list[Record], torch.Tensor]:
    info, dev = ev.loaded.info, ev.device
    seeds = range(task.seed_start, task.seed_start + task.n)
    labels = task.labels(seeds, info.conditions)
    calls: list[tuple[Callable, tuple, dict]] = []

    def recording(f: Callable) -> Callable:
        def call(*args, **kwargs):
            calls.append((f, args, kwargs))
            return f(*args, **kwargs)

        return call

    def sample(wrap: Callable = lambda f: f) -> torch.Tensor:
        return generate(ev.loaded.denoiser, seeds, info.shape, task.sampler, batch_size=task.batch_size, device=dev,
                        labels=labels, wrap=wrap)

    with torch.no_grad():
        images = sample(recording)

        def bare_loop() -> None:
            for f, args, kwargs in calls:
                f(*args, **kwargs)

        sampler_s, loop_s = _side_by_side(sample, bare_loop, dev, rounds)
        syncs = device_syncs(sample)
    batches = -(-task.n // task.batch_size)
    print(f"  sampler {task.sampler.name} ({len(calls)} network calls, N={task.n}): {sampler_s:.3f} s; the same "
          f"calls in a bare loop {loop_s:.3f} s; host-device syncs per batch {syncs / batches:.1f}", flush=True)
    return [Record.judged("sampler: bare loop of the same network calls / sampler (speed)", loop_s / sampler_s,
                          ">= 0.95", str(dev)),
            Record.judged("sampler: host-device syncs per batch", syncs / batches, None, str(dev))], images


def bench_features(ev: Evaluator, images: torch.Tensor, batch_size: int, rounds: int) -> tuple[list[Record],
                                                                                               torch.Tensor]:
    dev, net = ev.device, ev.extractor.net

    def direct() -> None:  # under the extractor's precision settings (TF32 flags, autocast), as skipsearch's call
        with torch.no_grad(), ev.extractor.numerics():
            for batch in images.split(batch_size):
                batch = batch.to(dev)
                net(batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch)[0].cpu()

    ours_s, direct_s = _side_by_side(lambda: ev.extractor(images, batch_size=batch_size), direct, dev, rounds)
    print(f"  features {ev.extractor.name} (N={len(images)}): skipsearch {ours_s:.3f} s; torch-fidelity's "
          f"extractor called directly {direct_s:.3f} s", flush=True)
    return [Record.judged("features: torch-fidelity's extractor direct / skipsearch (speed)", direct_s / ours_s,
                          ">= 0.95", str(dev))], ev.extractor(images, batch_size=batch_size)


def _torch_fidelity_fid(features: torch.Tensor, ref: Statistics) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    return fid_statistics_to_metric(fid_features_to_statistics(features.cpu().to(torch.float64)), ref.as_numpy(),
                                    verbose=False)[KEY_METRIC_FID]


def _torch_fidelity_kid(features: torch.Tensor, ref_features: torch.Tensor, size: int) -> float:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    size = min(size, len(features), len(ref_features))
    return kid_features_to_metric(features.cpu(), ref_features.cpu(), kid_subsets=100, kid_subset_size=size,
                                  rng_seed=2020, verbose=False)[KEY_METRIC_KID_MEAN]


def bench_distance(label: str, features: torch.Tensor, ref: Statistics, ref_features: torch.Tensor | None,
                   kid_size: int, device: torch.device, rounds: int = 3) -> list[Record]:
    """FID (and KID, given reference features) against torch-fidelity's: time and relative agreement."""
    ours_value = fid(features, ref)
    theirs_value = _torch_fidelity_fid(features, ref)
    ours_s, theirs_s = _side_by_side(lambda: fid(features, ref), lambda: _torch_fidelity_fid(features, ref), device,
                                     rounds)
    agreement = abs(ours_value - theirs_value) / max(abs(theirs_value), 1e-12)
    n, d = features.shape
    print(f"  FID {label} (N={n}, d={d}): skipsearch {ours_s * 1e3:.1f} ms, torch-fidelity {theirs_s * 1e3:.1f} ms; "
          f"values {ours_value:.10g} vs {theirs_value:.10g} (relative {agreement:.2g})", flush=True)
    dev = str(device)
    out = [Record.judged(f"FID {label}: torch-fidelity time / skipsearch time", theirs_s / ours_s, None, dev),
           Record.judged(f"FID {label}: relative difference from torch-fidelity", agreement,
                         "<= 1e-6" if n > d else None, dev)]
    if ref_features is not None:
        ours_kid = kid(features, ref_features, kid_size)[0]
        theirs_kid = _torch_fidelity_kid(features, ref_features, kid_size)
        ours_s, theirs_s = _side_by_side(lambda: kid(features, ref_features, kid_size),
                                         lambda: _torch_fidelity_kid(features, ref_features, kid_size), device, rounds)
        kid_agreement = abs(ours_kid - theirs_kid) / max(abs(theirs_kid), 1e-300)
        print(f"  KID {label} (subsets of {min(kid_size, n)}): skipsearch {ours_s * 1e3:.1f} ms, torch-fidelity "
              f"{theirs_s * 1e3:.1f} ms; relative difference {kid_agreement:.2g}", flush=True)
        out += [Record.judged(f"KID {label}: torch-fidelity time / skipsearch time", theirs_s / ours_s, None, dev),
                Record.judged(f"KID {label}: relative difference from torch-fidelity", kid_agreement, "<= 1e-9", dev)]
    return out


def bench_wide_distance(device: torch.device) -> list[Record]:
    """FID at d = 2048 (the Inception layer) on Gaussian features with a decaying spectrum: N below and above d."""
    gen = torch.Generator().manual_seed(0)
    d = 2048
    basis = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    scale = basis * torch.logspace(0, -3, d, dtype=torch.float64)

    def draw(n: int, shift: float) -> torch.Tensor:
        return (torch.randn(n, d, generator=gen, dtype=torch.float64) @ scale.T + shift).to(device)

    ref = feature_statistics(draw(5000, 0.0), with_sqrt=True)
    out = []
    for n in (1000, 4096):
        out += bench_distance(f"2048-d Gaussian, N={n}", draw(n, 0.01), ref, None, 0, device, rounds=3)
    return out


def bench_crn(ev: Evaluator, task: EvalTask, repeats: int = 4) -> list[Record]:
    """sd of FID(B) - FID(A) over seed blocks: the same block for both (shared) against different blocks."""
    from skipsearch.exchange.apply_file import apply
    from skipsearch.methods.skip_tuning.schedules import LinearSkip

    setting = LinearSkip(rho_top=0.9, rho_bottom=0.8)
    a, b = [], []
    for r in range(2 * repeats):
        block = dataclasses.replace(task, seed_start=task.seed_start + r * task.n)
        if r < repeats:
            a.append(ev(block).fid)
        with apply(ev.loaded.denoiser, setting):
            b.append(ev(block).fid)
    shared = [b[r] - a[r] for r in range(repeats)]
    independent = [b[repeats + r] - a[r] for r in range(repeats)]
    sd_shared, sd_independent = statistics.stdev(shared), statistics.stdev(independent)
    print(f"  common random numbers, {repeats} repeats at N={task.n}: sd(dFID) shared seeds {sd_shared:.4g}, "
          f"independent seeds {sd_independent:.4g}", flush=True)
    return [Record.judged("common random numbers: sd(dFID) independent / shared seeds",
                          sd_independent / max(sd_shared, 1e-12), None, str(ev.device))]


def bench_parts(spec_path: Path, rounds: int = 5, crn: bool = True, wide: bool = True) -> list[Record]:
    """``wide``: also the 2048-d FID timing and the precisions against fp32 (what ``--quick`` leaves out; with
    Inception on a CPU, the precisions take minutes)."""
    spec = load_spec(spec_path)
    device = resolve_device(spec.device)
    print(f"parts of a trial: {spec.model.model_id}, {spec.sampler.name} {spec.sampler.steps} steps, "
          f"N={spec.metric.n}, extractor {spec.metric.extractor}, device {device}; medians of {rounds} "
          f"alternating runs", flush=True)
    ev = build_evaluator(spec.model, spec.metric.extractor, spec.metric.reference, device)
    task = _task(spec, device)
    records, images = bench_sampler(ev, task, rounds)
    more, feats = bench_features(ev, images, spec.metric.batch_size, rounds)
    records += more
    records += bench_distance(f"{spec.metric.extractor} features", feats, ev.reference.stats, ev.reference.features,
                              spec.metric.kid_subset_size, ev.device)
    if wide:
        records += bench_wide_distance(ev.device)
        ref_images = data.load(spec.metric.reference, resolution=ev.loaded.info.resolution)
        records += bench_precision(spec.metric.extractor, images, ref_images, ev.device,
                                   spec.metric.batch_size)
    if crn and spec.kind == "skip_tuning":
        records += bench_crn(ev, task)
    return records

