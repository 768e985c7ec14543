"""Several trials in one network batch: K coefficient sets sampled together, each sample with its own trial's rho.

Why: one trial of a small model does not fill a GPU, so K trials run in the time of little more than one. Every
trial of a study sees the same seeds (common random numbers), so a shared batch is one chunk of noise repeated K
times, copy c carrying trial ``alive[c]``'s coefficients (``BatchLayout``). The chunks are the ones each trial
would sample alone (the ladder's and ``batch_size``'s), and features and distances are computed per trial on its
own images in the same batches (in every extractor its report names), so a trial's numbers equal its numbers
alone wherever the network's kernels give a sample the same result whatever else is in its batch. The CPU
kernels the tests use do; a GPU may choose another algorithm for another batch size, which moves the last bits
(``skipsearch bench`` reports by how much).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import torch

from skipsearch.data import to_uint8
from skipsearch.diffusion.generation import check_sampler, non_finite, sample_seeds
from skipsearch.diffusion.trajectories import Sharing
from skipsearch.errors import SampleError, TrialError
from skipsearch.evaluate import EvalTask, Evaluator, check_images
from skipsearch.previews import grid_png
from skipsearch.progress import Progress
from skipsearch.results import Score
from skipsearch.timing import Stopwatch, drained_seconds

@dataclass
class BatchLayout:
    """Which trial each row of the current network batch belongs to. The evaluator sets ``per_trial`` (the
    chunk's size) before each chunk; the driver drops trials that stop (pruned or failed)."""

    alive: list[int]
    per_trial: int = 0
    _owners: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    def owners(self, rows: int, device: torch.device) -> torch.Tensor:
        """The trial of each of a network call's ``rows`` rows (made once per shape and device). A call with
        guidance in one batch holds the chunk twice (unconditional and conditional), hence the modulo."""
        key = (rows, device, self.per_trial, tuple(self.alive))
        if key not in self._owners:
            group = len(self.alive) * self.per_trial
            if group == 0 or rows % group:
                raise RuntimeError(f"a network call of {rows} rows does not hold the {len(self.alive)} trials' "
                                   f"chunks of {self.per_trial} samples")
            row_trial = torch.arange(rows) % group // self.per_trial
            self._owners[key] = torch.tensor(self.alive)[row_trial].to(device)
        return self._owners[key]

    def drop(self, trials: set[int]) -> None:
        if trials:
            self.alive = [k for k in self.alive if k not in trials]
            self._owners.clear()


# What a shared ladder yields at each rung: every trial still running, with its score or its own failure.
RungResults = dict[int, Score | TrialError]


def batch_ladder(ev: Evaluator, task: EvalTask, layout: BatchLayout, progress: bool = False,
                 shares: list[Sharing | None] | None = None) -> Generator[RungResults, set[int] | None, None]:
    """The ladder of ``task`` for the trials of ``layout`` at once (their coefficients are on the model, reading
    the layout). After each rung, send the set of trials to stop (pruned); a trial whose samples are not finite
    or diverged fails alone and the others go on. A batched trial's wall time is its share of the batch's.
    ``shares``: per trial, the steps it shares with the baseline's trajectory (``Sharing``), or None."""
    start, trials = time.perf_counter(), len(layout.alive)
    check_sampler(ev.loaded.denoiser, task.sampler)
    own = {k: Stopwatch() for k in layout.alive}  # per trial: features and distance
    network: dict[int, float] = dict.fromkeys(layout.alive, 0.0)  # per trial: its share of the shared calls
    feats: dict[int, dict[str, list[torch.Tensor]]] = {k: {} for k in layout.alive}  # per trial, per extractor
    previews: dict[int, str] = {}
    done = 0
    for n in task.ladder:
        seeds = range(task.seed_start + done, task.seed_start + n)
        images, failed = _sample_rung(ev, task, layout, seeds, network, progress, shares)
        results: RungResults = dict(failed)
        for k in layout.alive:
            try:
                batch = torch.cat(images[k])
                check_images(batch)
            except SampleError as err:
                results[k] = err
                continue
            for label, part in ev.features(batch, task, own[k]).items():
                feats[k].setdefault(label, []).append(part)
            if k not in previews:
                previews[k] = grid_png(batch)
            spaces = {label: torch.cat(parts) for label, parts in feats[k].items()}
            score = ev.score(spaces.pop(ev.extractor.name), task, n, own[k], start, previews[k], others=spaces)
            timings = {**score.timings, "network": network[k]}
            saved = 0 if shares is None or shares[k] is None else shares[k].saved
            results[k] = dataclasses.replace(score, wall_s=(time.perf_counter() - start) / trials, timings=timings,
                                             evaluations_saved=saved)
        done = n
        stopped = yield results
        layout.drop({k for k, r in results.items() if not isinstance(r, Score)} | set(stopped or ()))
        if not layout.alive:
            return


def _sample_rung(ev: Evaluator, task: EvalTask, layout: BatchLayout, seeds: range, network: dict[int, float],
                 progress: bool, shares: list[Sharing | None] | None = None,
                 ) -> tuple[dict[int, list[torch.Tensor]], dict[int, TrialError]]:
    """One rung's new samples for every trial still running, chunk by chunk, all trials in each network batch.
    Adds each trial's share of the network time to ``network``; returns the images and the trials that failed.
    With ``shares``, a batch starts from the baseline's cached state where its earliest trial's window opens."""
    images: dict[int, list[torch.Tensor]] = {k: [] for k in layout.alive}
    failed: dict[int, TrialError] = {}
    shared: list[tuple[Stopwatch, list[int]]] = []  # read after the rung: reading waits for the device
    with Progress(len(seeds) * len(layout.alive), "sampling", "samples", enabled=progress, leave=False) as bar:
        for offset in range(0, len(seeds), task.batch_size):
            if not layout.alive:
                break
            chunk = seeds[offset : offset + task.batch_size]
            layout.per_trial, live = len(chunk), list(layout.alive)
            watch = Stopwatch()
            shared.append((watch, live))
            plan = _batch_sharing(shares, live)
            x = sample_seeds(ev.loaded.denoiser, chunk, ev.loaded.info.shape, task.sampler, device=ev.device,
                             labels=task.labels(chunk, ev.loaded.info.conditions), copies=len(live),
                             wrap=functools.partial(watch.timed, key="network", device=ev.device), share=plan)
            if plan is not None:
                for k in live:
                    shares[k].saved += plan.saved // len(live)
            for c, k in enumerate(live):
                part = x[c * len(chunk) : (c + 1) * len(chunk)]
                if not torch.isfinite(part).all():
                    failed[k] = SampleError(non_finite(offset, len(part)))
                    continue
                images[k].append(to_uint8(part).cpu())
            layout.drop(set(failed))
            bar.update(len(x))
    for watch, live in shared:
        for k in live:
            network[k] += watch.seconds.get("network", 0.0) / len(live)
    return images, failed


def _batch_sharing(shares: list[Sharing | None] | None, live: list[int]) -> Sharing | None:
    """The shared steps of one batch: as many as its earliest-opening trial has (``sample_seeds`` caches no state
    from a batch of several trials)."""
    if shares is None or any(shares[k] is None for k in live):
        return None
    return Sharing(steps=min(shares[k].steps for k in live), cache=shares[live[0]].cache)


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
