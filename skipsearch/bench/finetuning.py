"""``skipsearch bench`` for Diff-Tuning specs: fine-tuning steps/s against a bare training loop, measured
side by side, and the knowledge bank's share of a study's first trial."""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from skipsearch.bench.measurements import Record
from skipsearch import data
from skipsearch.diffusion.preconditioning import denoising_error
from skipsearch.evaluate import evaluator_for, resolve_device
from skipsearch.methods.diff_tuning.bank import knowledge_bank
from skipsearch.methods.diff_tuning.noise import quantile_to_sigma
from skipsearch.methods.diff_tuning.finetune_task import finetune_task
from skipsearch.methods.diff_tuning.training import finetune
from skipsearch.methods.diff_tuning.finetune_trial import downstream_images, finetune_ladder
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights
from skipsearch.resolve import resolve
from skipsearch.specfile import load_spec


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


def bench_difftuning(spec_path: Path, steps: int = 100, repeats: int = 3) -> list[Record]:
    """Fine-tuning steps/s of a Diff-Tuning trial against a bare loop (interleaved, medians), and the
    knowledge bank's share of a study's first trial (the bank is built then, and reused after)."""
    spec = load_spec(spec_path)
    resolve(spec, str(spec_path))
    with tempfile.TemporaryDirectory() as tmp:
        f, sampler = spec.finetune, spec.sampler.config()
        task = finetune_task(spec, n=spec.metric.n, seed_start=spec.metric.seed, train_seed=f.seed)
        ev = evaluator_for(task.target)
        evaluator_for(task.source)
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
    bare_rate, trial_rate = steps / statistics.median(bare), steps / statistics.median(trial)
    share = first.timings.get("bank", 0.0) / first.wall_s
    print(f"Diff-Tuning benchmark: {spec.model.model_id}, batch {f.batch_size} (bank fraction {w.r}), {steps} steps, "
          f"median of {repeats} interleaved runs, device {resolve_device(spec.device)}")
    print(f"  bare training loop          {bare_rate:8.1f} steps/s")
    print(f"  Diff-Tuning trial loop      {trial_rate:8.1f} steps/s")
    verdict = "met" if trial_rate / bare_rate >= 0.9 else "MISSED"
    print(f"  trial / bare (steps/s)      {trial_rate / bare_rate:8.3f}   target >= 0.9: {verdict}")
    print(f"  first trial ({f.steps} steps, bank of {f.bank_size} built in it): {first.wall_s:.1f} s, of which "
          f"the bank {first.timings.get('bank', 0.0):.1f} s = share {share:.3f}; later trials reuse it")
    device = str(ev.device)
    return [Record.judged("Diff-Tuning: trial loop / bare training loop (steps/s)", trial_rate / bare_rate, ">= 0.9",
                          device),
            Record.judged("Diff-Tuning: share of the first trial building the bank", share, None, device)]
