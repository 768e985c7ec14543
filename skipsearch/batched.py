"""How many trials share one network batch: K coefficient sets sampled together, each sample with its own trial's rho.

Why: one trial of a small model does not fill a GPU, so K trials run in the time of little more than one. Every
trial of a study sees the same seeds (common random numbers), so a shared batch is one chunk of noise repeated K
times, copy c carrying trial ``alive[c]``'s coefficients (``batch_layout.BatchLayout``); the ladder is
``evaluate.Evaluator.trials``, which samples a lone trial as its K = 1 case. The chunks are the ones each trial
would sample alone (the ladder's and ``batch_size``'s), and features and distances are computed per trial on its
own images in the same batches (in every extractor its report names), so a trial's numbers equal its numbers
alone wherever the network's kernels give a sample the same result whatever else is in its batch. The CPU
kernels the tests use do; a GPU may choose another algorithm for another batch size, which moves the last bits
(``skipsearch bench`` reports by how much).
"""

from __future__ import annotations

import dataclasses
import statistics

import torch

from skipsearch.diffusion.generation import sample_seeds
from skipsearch.evaluate import EvalTask, Evaluator
from skipsearch.timing import drained_seconds


def auto_trials_per_batch(ev: Evaluator, task: EvalTask, limit: int = 16) -> int:
    """How many trials to batch, measured on the device: 1 on a CPU (one trial's batch already keeps its cores
    busy); on a GPU, keep doubling while a network call on twice the rows costs less than 1.6 times as long
    (the device is not full yet) and the rows fit in 60% of the free memory."""
    if ev.device.type != "cuda":
        return 1
    probe = dataclasses.replace(task.sampler, steps=1)
    seeds = range(task.seed_start, task.seed_start + task.batch_size)

    def call(copies: int) -> float:
        labels = task.labels(seeds, ev.loaded.info.conditions)
        return statistics.median(drained_seconds(lambda: sample_seeds(
            ev.loaded.denoiser, seeds, ev.loaded.info.shape, probe, device=ev.device, labels=labels,
            copies=copies), ev.device) for _ in range(3))

    torch.cuda.reset_peak_memory_stats(ev.device)
    before = torch.cuda.memory_allocated(ev.device)
    now = call(1)
    per_copy = max(1, torch.cuda.max_memory_allocated(ev.device) - before)
    fits = int(0.6 * torch.cuda.mem_get_info(ev.device)[0] // per_copy)
    k = 1
    while 2 * k <= min(limit, fits):
        doubled = call(2 * k)
        if doubled > 1.6 * now:
            break
        k, now = 2 * k, doubled
    return k
