"""Benchmarks measured side by side in one run, printed as ratios so a noisy machine does not mislead."""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from skipsearch import data
from skipsearch import study as _study
from skipsearch.context import StudyContext
from skipsearch.difftuning import DiffTuningWeights, finetune, knowledge_bank, quantile_to_sigma
from skipsearch.errors import UserError
from skipsearch.evaluate import evaluator, resolve_device
from skipsearch.finetuning import downstream_images, finetune_ladder
from skipsearch.networks import denoising_error
from skipsearch.spec import DiffTuningSpec, load_spec


def bench_trial(spec_path: Path, n_trials: int = 3) -> dict:
    """Wall time of whole trials (ask, evaluate, record, tell) against their network + feature time."""
    spec = load_spec(spec_path)
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec.model_copy(update={"name": "bench", "storage": f"sqlite:///{Path(tmp) / 'bench.db'}"})
        ctx = _study.open_study(spec, spec.storage, echo=lambda line: None)
        try:
            # warm-up: model, extractor and reference statistics load once per worker
            _study.run_trial(ctx, _study.reserve(ctx, n_trials + 1))
            rows = []
            for _ in range(n_trials):
                start = time.perf_counter()
                _, state, result, reason = _study.run_trial(ctx, _study.reserve(ctx, n_trials + 1))
                wall = time.perf_counter() - start
                if result is None:
                    raise RuntimeError(f"benchmark trial failed: {reason}")
                rows.append((wall, result["timings"].get("network", 0.0), result["timings"].get("features", 0.0)))
        finally:
            ctx.close()
    wall, net, feat = (statistics.median(col) for col in zip(*rows))
    other = wall - net - feat
    print(f"trial benchmark: {spec.model.name}, {spec.sampler.name} {spec.sampler.steps} steps "
          f"({spec.sampler.config().nfe} NFE), N={spec.metric.n}, device {resolve_device(spec.device)}, "
          f"median of {n_trials} trials")
    print(f"  trial wall time            {wall:8.3f} s")
    print(f"  network forward passes     {net:8.3f} s")
    print(f"  feature extraction         {feat:8.3f} s")
    print(f"  everything else            {other:8.3f} s  (Optuna, database, FID/KID, bookkeeping)")
    print(f"  (network + features)/wall  {(net + feat) / wall:8.3f}")
    verdict = "met" if other / wall < 0.10 else "MISSED"
    print(f"  everything else / wall     {other / wall:8.3f}  target < 0.10: {verdict}")
    return {"wall_s": wall, "network_s": net, "features_s": feat, "other_fraction": other / wall}


def bench_ray(spec_path: Path, m: int = 8) -> dict[str, float]:
    """The same M trials in-process and on a local Ray with 1 and 2 workers (1 CPU, so 1 thread, each)."""
    import ray

    from skipsearch.tune import Placement, search_on_ray

    spec = load_spec(spec_path)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": m})})
    quiet = lambda line: None  # noqa: E731
    walls: dict[str, float] = {}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        def study(name: str) -> StudyContext:
            return _study.open_study(spec.model_copy(update={"name": name}), f"sqlite:///{Path(tmp) / name}.db",
                                     echo=quiet)

        for n_threads in (1, threads):
            torch.set_num_threads(n_threads)
            evaluator.cache_clear()  # each run loads the model once, as each Ray worker does
            ctx, start = study(f"inproc{n_threads}"), time.perf_counter()
            _study.search(ctx, m)
            walls[f"in-process, {n_threads} thread(s)"] = time.perf_counter() - start
            ctx.close()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start = time.perf_counter() - start
        try:
            for workers in (1, 2):
                ctx, start = study(f"ray{workers}"), time.perf_counter()
                search_on_ray(ctx, m, Placement(workers=workers, cpus_per_trial=1.0))
                walls[f"Ray, {workers} worker(s) x 1 CPU"] = time.perf_counter() - start
                ctx.close()
        finally:
            ray.shutdown()
    one, inproc1 = walls["Ray, 1 worker(s) x 1 CPU"], walls["in-process, 1 thread(s)"]
    print(f"Ray benchmark: {m} trials of {spec.name} ({spec.sampler.name} {spec.sampler.steps} steps, "
          f"N={spec.metric.n}) on this machine; Ray's own start ({ray_start:.1f} s) is not counted")
    for name, wall in walls.items():
        print(f"  {name:32s} {wall:8.1f} s")
    print(f"  Ray 1 worker / in-process (1 thread each)  {one / inproc1:6.3f}   target <= 1.15")
    print(f"  Ray 1 worker / 2 workers (speed-up)         {one / walls['Ray, 2 worker(s) x 1 CPU']:6.3f}"
          f"   target >= 1.6")
    return walls


def _bare_loop(denoiser, images: torch.Tensor, steps: int, batch: int, lr: float,
               sigma_range: tuple[float, float]) -> float:
    """The reference: a plain training loop of the same model and batch (uniform ln sigma, no bank)."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(denoiser.net.parameters(), lr=lr)
    denoiser.train().requires_grad_(True)
    start = time.perf_counter()
    for _ in range(steps):
        x = images[torch.randint(len(images), (batch,), generator=g)]
        sigma = quantile_to_sigma(torch.rand(batch, generator=g), *sigma_range).to(x.device)
        loss = denoising_error(denoiser, x, sigma, g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def bench_difftuning(spec_path: Path, steps: int = 100, repeats: int = 3) -> dict[str, float]:
    """Fine-tuning steps/s of a Diff-Tuning trial against a bare loop (interleaved, medians), and the
    knowledge bank's share of a study's first trial (the bank is built then, and reused after)."""
    spec = load_spec(spec_path)
    if not isinstance(spec, DiffTuningSpec):
        raise UserError(f"{spec_path} is a {spec.kind} spec; the Diff-Tuning benchmark needs kind: diff_tuning")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _study.open_study(spec.model_copy(update={"name": "bench"}), f"sqlite:///{Path(tmp) / 'b.db'}",
                                echo=lambda line: None)
        f, sampler = spec.finetune, spec.sampler.config()
        task = ctx.finetune_task(spec.metric.n, spec.metric.seed, f.seed)
        ev = evaluator(task.model, task.extractor, task.target, task.device)
        evaluator(task.model, task.extractor, task.source, task.device)
        new = data.to_model_range(downstream_images(f.data, f.n_images, f.data_seed, ev.loaded.info.resolution))
        new = new.to(ev.device)
        w = DiffTuningWeights(lr=f.lr, steps=steps)  # the official defaults: s = s' = 1, r = 0.2, lambda = 0.1
        sigma_range = (sampler.sigma_min, sampler.sigma_max)

        # first trial of a study: bank built from scratch (a private cache), then fine-tuning and scoring
        os.environ["SKIPSEARCH_CACHE"], old = tmp, os.environ.get("SKIPSEARCH_CACHE")
        try:
            *_, first = finetune_ladder(task, w.model_copy(update={"steps": f.steps}))
            bank = data.to_model_range(knowledge_bank(ev.loaded, sampler, f.bank_size, f.bank_seed)).to(ev.device)
        finally:
            os.environ.pop("SKIPSEARCH_CACHE") if old is None else os.environ.__setitem__("SKIPSEARCH_CACHE", old)
        bare, trial = [], []
        for _ in range(repeats):
            bare.append(_bare_loop(copy.deepcopy(ev.loaded.denoiser), new, steps, f.batch_size, f.lr, sigma_range))
            model, start = copy.deepcopy(ev.loaded.denoiser), time.perf_counter()
            for _ in finetune(model, new, bank, w, batch_size=f.batch_size, sigma_range=sigma_range, seed=f.seed):
                pass
            trial.append(time.perf_counter() - start)
        ctx.close()
    bare_rate, trial_rate = steps / statistics.median(bare), steps / statistics.median(trial)
    share = first["timings"].get("bank", 0.0) / first["wall_s"]
    print(f"Diff-Tuning benchmark: {spec.model.name}, batch {f.batch_size} (bank fraction {w.r}), {steps} steps, "
          f"median of {repeats} interleaved runs, device {resolve_device(spec.device)}")
    print(f"  bare training loop          {bare_rate:8.1f} steps/s")
    print(f"  Diff-Tuning trial loop      {trial_rate:8.1f} steps/s")
    verdict = "met" if trial_rate / bare_rate >= 0.9 else "MISSED"
    print(f"  trial / bare (steps/s)      {trial_rate / bare_rate:8.3f}   target >= 0.9: {verdict}")
    print(f"  first trial ({f.steps} steps, bank of {f.bank_size} built in it): {first['wall_s']:.1f} s, of which "
          f"the bank {first['timings'].get('bank', 0.0):.1f} s = share {share:.3f}; later trials reuse it")
    return {"bare_steps_per_s": bare_rate, "trial_steps_per_s": trial_rate, "ratio": trial_rate / bare_rate,
            "bank_share": share, "first_trial_s": first["wall_s"]}
