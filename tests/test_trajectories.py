"""Shared trajectories (search.trajectory_cache_mb): a time_window trial starts from the baseline's cached states
where its window has not opened yet, gets the numbers it gets without them, bit for bit, and counts the network
evaluations it skipped, which are exactly the calls the network did not receive."""

from __future__ import annotations

import families
import pytest
import torch
import yaml
from conftest import tiny_spec_dict
from test_spec import cli

from skipsearch.diffusion.generation import SamplerConfig, sample_seeds
from skipsearch.diffusion.trajectories import Sharing, TrajectoryCache
from skipsearch.methods import parse_coefficients
from skipsearch.methods.skip_tuning import SkipTuning
from skipsearch.methods.skip_tuning.schedules import TimeWindowSkip
from skipsearch.methods.skip_tuning.shared import baseline_steps
from skipsearch.models import load_model
from skipsearch.search import driver
from skipsearch.search.driver import open_study
from skipsearch.search.trial_steps import trial_ladder
from skipsearch.specfile import parse_spec


def _spec(name: str, cache_mb: int, batch_trials: int = 1):
    # Heun with 10 steps (19 NFE): windows drawn from [0.05, 40] open at different steps
    return parse_spec(tiny_spec_dict(
        name, sampler={"name": "heun", "steps": 10},
        metric={"n": 48, "rungs": [16], "batch_size": 24, "kid_subset_size": 16},
        search={"family": "time_window", "trials": 7, "sigma_range": [0.05, 40.0], "batch_trials": batch_trials,
                "trajectory_cache_mb": cache_mb}))


@pytest.mark.parametrize("batch_trials", [1, 3])
def test_time_window_trials_equal_themselves_without_shared_states(tmp_path, batch_trials):
    spec = _spec(f"shared-{batch_trials}", cache_mb=64, batch_trials=batch_trials)
    ctx = open_study(spec, f"sqlite:///{tmp_path / 's.db'}", echo=lambda line: None)
    rows = {"n": 0}
    model = _digits_denoiser(spec)
    handle = model.register_forward_pre_hook(lambda module, args: rows.__setitem__("n", rows["n"] + len(args[0])))
    try:
        driver.search(ctx, spec.search.trials, progress=False)
        trials, rungs = ctx.store.trials_frame(spec.name), ctx.store.rungs_frame(spec.name)
        saved = {t.number: t.user_attrs.get("evaluations_saved", 0) for t in ctx.study.get_trials()}
    finally:
        handle.remove()
        ctx.close()
    assert len(trials) == 7 and set(trials.state) <= {"COMPLETE", "PRUNED"}
    off = _spec(f"shared-{batch_trials}", cache_mb=0)
    for row in trials.itertuples():
        recorded = [(r.n, r.fid, r.kid) for r in rungs[rungs.trial_number == row.trial_number].sort_values("n")
                    .itertuples()]
        alone = [(r.score.n, r.score.fid, r.score.kid) for r in trial_ladder(off, parse_coefficients(
            row.coefficients_json))]
        assert recorded == alone[: len(recorded)], f"trial {row.trial_number} differs without shared states"
    nfe = spec.sampler.config().nfe
    assert sum(saved.values()) > 0, saved  # some window opened after the first steps
    assert rows["n"] == sum(int(r.n) * nfe - saved[r.trial_number] for r in trials.itertuples())


def _digits_denoiser(spec):
    from skipsearch.evaluate import evaluator_for
    from skipsearch.methods.sampled import eval_task

    return evaluator_for(eval_task(spec, n=spec.metric.n, seed_start=0)).loaded.denoiser


def test_the_window_is_tested_on_the_sigma_the_hooks_read(tmp_path):
    """A VP model's hooks read the sigma of its (clamped, float32) timestep, not the sampler's: sampler sigma 0.002
    reaches them as the schedule's smallest, about 0.0100. A window around 0.0100 holds none of the sampler's
    sigmas, yet changes the last steps; the trial shares only the steps before them, and equals itself unshared."""
    loaded = load_model(families_model(tmp_path))
    model, shape, cpu = loaded.denoiser, loaded.info.shape, torch.device("cpu")
    sampler = SamplerConfig("heun", 5, sigma_min=0.002, sigma_max=80.0)
    window = TimeWindowSkip(rho_top=1.5, rho_bottom=0.5, sigma_lo=0.008, sigma_hi=0.012)
    assert not window.active(sampler.sigmas()).any()
    steps = baseline_steps(window, model, sampler, shape, cpu, None)
    assert steps == 3  # Heun's step 3 calls the network at sigma_3 and (corrector) at sigma_4 = 0.002 -> 0.0100
    cache, seeds = TrajectoryCache(2**26), range(6)
    baseline = sample_seeds(model, seeds, shape, sampler, device=cpu, share=Sharing(sampler.steps, cache))
    with SkipTuning().apply(model, window, None):
        plan = Sharing(steps, cache)
        shared = sample_seeds(model, seeds, shape, sampler, device=cpu, share=plan)
        alone = sample_seeds(model, seeds, shape, sampler, device=cpu)
    assert torch.equal(shared, alone) and not torch.equal(shared, baseline)
    assert plan.saved == 6 * len(seeds)  # steps 0..2, two calls each, per sample


def families_model(tmp_path):
    from skipsearch.models.diffusers_unet import DiffusersModel

    pytest.importorskip("diffusers")
    return DiffusersModel(path=str(families.ddpm_folder(tmp_path / "pipe")))


def test_a_full_cache_keeps_what_it_has():
    """Trials scan the same chunks in the same order: keeping the first ones (not the most recent) is what helps."""
    state = torch.zeros(4, 1, 8, 8)  # 1 KiB
    cache = TrajectoryCache(limit_bytes=3 * 1024)
    cache.put(("a",), 1, state)
    cache.put(("a",), 2, state + 2)
    cache.put(("b",), 1, state)
    assert cache.latest(("a",), upto=5)[0] == 2 and cache.latest(("a",), upto=1)[0] == 1
    assert cache.latest(("a",), upto=0) is None
    cache.put(("c",), 1, state)  # over the limit: not kept
    assert cache.latest(("c",), upto=9) is None and cache.latest(("b",), upto=9) is not None
    assert cache.nbytes == 3 * 1024
    torch.testing.assert_close(cache.latest(("a",), upto=2)[1], state + 2)
    cache.clear()
    cache.put(("d",), 1, torch.zeros(4, 1, 32, 32))  # one state larger than the whole limit: not kept
    assert cache.latest(("d",), upto=9) is None and cache.nbytes == 0


def test_a_changed_weight_does_not_resume_from_old_states(tmp_path):
    loaded = load_model(families_model(tmp_path))
    model, shape, cpu = loaded.denoiser, loaded.info.shape, torch.device("cpu")
    sampler = SamplerConfig("euler", 4, sigma_min=0.02, sigma_max=80.0)
    cache = TrajectoryCache(2**26)
    sample_seeds(model, range(3), shape, sampler, device=cpu, share=Sharing(sampler.steps, cache))
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)  # a fine-tuning step, in place
    plan = Sharing(sampler.steps, cache)
    again = sample_seeds(model, range(3), shape, sampler, device=cpu, share=plan)
    assert plan.saved == 0 and torch.equal(again, sample_seeds(model, range(3), shape, sampler, device=cpu))


@pytest.mark.parametrize("value", [-1, "lots", 2**21])
def test_a_bad_cache_size_names_the_field(tmp_path, value):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict("bad", search={"family": "time_window",
                                                                 "trajectory_cache_mb": value})))
    result = cli("run", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "search.trajectory_cache_mb" in output and "Traceback" not in output, output
    assert not (tmp_path / "x.db").exists() or "bad" not in (tmp_path / "x.db").read_bytes().decode("latin-1")
