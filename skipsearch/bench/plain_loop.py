"""The plain side of ``skipsearch bench --versus-plain``: the search loop a user writes with Optuna and
torch-fidelity instead of skipsearch (TPE over the method's own space, fresh seeds per trial, no rungs, no
baseline, the lowest FID wins)."""

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
from skipsearch.methods.tasks import eval_task
from skipsearch.spec import Spec


@dataclass(frozen=True, kw_only=True)
class PlainSearch:
    best_trial: int
    best_value: float
    coefficients: Coefficients
    values: tuple[float, ...]
    wall_s: float


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
                              device=ev.device, labels=labels)
        trial.set_user_attr("coefficients", coefficients.model_dump_json())
        return torch_fidelity_fid(ev.extractor(images, batch_size=spec.metric.batch_size), reference)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=repeat))
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, catch=(TrialError,))
    wall = time.perf_counter() - start
    best = study.best_trial
    values = tuple(t.value if t.value is not None else math.nan for t in study.trials)
    return PlainSearch(best_trial=best.number, best_value=float(best.value), wall_s=wall, values=values,
                       coefficients=parse_coefficients(best.user_attrs["coefficients"]))
