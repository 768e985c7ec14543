"""The plain side of ``skipsearch bench --versus-plain``: the search loop a user writes with Optuna and
torch-fidelity instead of skipsearch (TPE over the method's own space, fresh seeds per trial, no rungs, no
baseline, the lowest FID wins).

TPE with a fixed seed proposes trial t from trials 0..t-1 and its own random stream alone, never from the number
of trials it was asked for, so the first k trials of a longer run are the run of k trials. One run therefore
answers both questions the benchmark asks: the winner at the same budget as skipsearch (``best_within(k)``) and
how long the loop takes to reach a winner as good as skipsearch's (the running best, trial by trial)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import optuna
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

from skipsearch.diffusion.generation import generate
from skipsearch.errors import TrialError
from skipsearch.evaluate import Evaluator
from skipsearch.methods import Coefficients, method_for, parse_coefficients
from skipsearch.methods.sampled import eval_task
from skipsearch.progress import Progress
from skipsearch.spec import Spec


@dataclass(frozen=True, kw_only=True)
class PlainSearch:
    """Every trial of the run, in order: its FID (NaN when it failed), coefficients and the wall time at its
    end."""

    values: tuple[float, ...]
    coefficients: tuple[Coefficients | None, ...]
    ended_s: tuple[float, ...]

    def best_within(self, k: int) -> int | None:
        """The winner of the first ``k`` trials (the lowest FID; the earliest on a tie), None if all failed."""
        done = [t for t in range(min(k, len(self.values))) if not math.isnan(self.values[t])]
        return min(done, key=lambda t: (self.values[t], t), default=None)

    def running_best(self) -> list[int]:
        """The trials that became the loop's best when they ended, in order (each one beats all before it)."""
        out: list[int] = []
        for t, value in enumerate(self.values):
            if not math.isnan(value) and (not out or value < self.values[out[-1]]):
                out.append(t)
        return out

    def wall_within(self, k: int) -> float:
        """Seconds the first ``k`` trials took."""
        return self.ended_s[min(k, len(self.ended_s)) - 1] if k > 0 and self.ended_s else 0.0


def torch_fidelity_fid(features: torch.Tensor, reference: dict) -> float:
    """FID the way a torch-fidelity user computes it from features: its statistics, its distance."""
    stats = fid_features_to_statistics(features.detach().cpu().to(torch.float64))
    return float(fid_statistics_to_metric(stats, reference, verbose=False)[KEY_METRIC_FID])


def plain_search(spec: Spec, ev: Evaluator, repeat: int, n_trials: int, seed_start: int) -> PlainSearch:
    """The loop a user writes with Optuna and torch-fidelity: TPE over the method's space, N = ``confirm.n``
    fresh seeds per trial (trial t uses ``seed_start + t*N`` onwards), no rungs, no baseline, lowest FID wins."""
    method, info, n = method_for(spec.kind), ev.loaded.info, spec.confirm.n
    reference = fid_features_to_statistics(ev.reference.features.detach().cpu().to(torch.float64))
    sampler = spec.sampler.config()

    def objective(trial: optuna.Trial) -> float:
        coefficients = method.suggest(trial, spec, info)
        seeds = range(seed_start + trial.number * n, seed_start + (trial.number + 1) * n)
        labels = eval_task(spec, n=n, seed_start=seeds.start).labels(seeds, info.conditions)
        with method.apply(ev.loaded.denoiser, coefficients, None):
            images = generate(ev.loaded.denoiser, seeds, info.shape, sampler, batch_size=spec.metric.batch_size,
                              device=ev.device, labels=labels, progress=True)
        trial.set_user_attr("coefficients", coefficients.model_dump_json())
        return torch_fidelity_fid(ev.extractor(images, batch_size=spec.metric.batch_size), reference)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=repeat))
    start = time.perf_counter()
    ended: list[float] = []

    def done(_study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        ended.append(time.perf_counter() - start)
        bar.update(1)

    with Progress(n_trials, f"plain loop, repeat {repeat}", "trials") as bar:
        study.optimize(objective, n_trials=n_trials, catch=(TrialError,), callbacks=[done])
    trials = study.trials
    return PlainSearch(values=tuple(math.nan if t.value is None else float(t.value) for t in trials),
                       coefficients=tuple(parse_coefficients(t.user_attrs["coefficients"])
                                          if "coefficients" in t.user_attrs else None for t in trials),
                       ended_s=tuple(ended))
