"""Trials sharing network batches (search.batch_trials): each trial's numbers equal its numbers alone, every rung
is recorded, pruning and failures stay per trial, and an interruption loses nothing."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_spec_dict
from test_spec import cli

from skipsearch.methods import parse_coefficients
from skipsearch.models import family_of
from skipsearch.search import driver
from skipsearch.search.batch_trials import trials_per_batch
from skipsearch.search.driver import open_study
from skipsearch.search.trial_steps import trial_ladder
from skipsearch.specfile import parse_spec


def _spec(name: str, **search):
    # rungs 16 -> 32 -> 64 with chunks of 24: rung 3 has a full and a partial chunk, so chunk boundaries count
    return parse_spec(tiny_spec_dict(name, metric={"n": 64, "rungs": [16, 32], "batch_size": 24,
                                                   "kid_subset_size": 16},
                                     search={"trials": 7, "batch_trials": 3, **search}))


def _alone(spec, coefficients_json: str) -> list[tuple[int, float, float]]:
    """(N, FID, KID) of every rung of the trial run by itself, as a K = 1 study runs it."""
    rungs = trial_ladder(spec, parse_coefficients(coefficients_json))
    return [(r.score.n, r.score.fid, r.score.kid) for r in rungs]


def _study(tmp_path, spec):
    ctx = open_study(spec, f"sqlite:///{tmp_path / 'b.db'}", echo=lambda line: None)
    try:
        driver.search(ctx, spec.search.trials, progress=False)
        return ctx.store.trials_frame(spec.name), ctx.store.rungs_frame(spec.name), ctx.store.claims(spec.name)
    finally:
        ctx.close()


@pytest.mark.parametrize("family", ["linear", "time_window"])
def test_every_rung_of_a_batched_trial_equals_the_trial_alone(tmp_path, family):
    spec = _spec(f"batched-{family}", family=family, sigma_range=[0.05, 40.0])
    trials, rungs, claims = _study(tmp_path, spec)
    assert sorted(trials.trial_number) == list(range(7)) and not claims
    assert trials.set_index("trial_number").loc[0, "role"] == "baseline"
    assert set(trials.state) <= {"COMPLETE", "PRUNED"} and (trials.state == "COMPLETE").sum() >= 2
    params = {tuple(sorted(parse_coefficients(c).model_dump().items())) for c in trials.coefficients_json}
    assert len(params) == 7  # seven different points, none repeated
    for row in trials.itertuples():
        recorded = [(r.n, r.fid, r.kid) for r in rungs[rungs.trial_number == row.trial_number].sort_values("n")
                    .itertuples()]
        alone = _alone(spec, row.coefficients_json)
        assert recorded == alone[: len(recorded)], f"trial {row.trial_number} differs from itself alone"
        assert (row.n, row.fid) == recorded[-1][:2]
        assert (row.state == "COMPLETE") == (row.n == 64)


def test_a_diverging_trial_fails_alone_and_the_others_complete(tmp_path, digits_model):
    """NaNs injected into the samples of one trial of the shared batch (the one with the lowest rho_top)."""
    spec = _spec("batched-nan")
    from skipsearch.evaluate import evaluator_for
    from skipsearch.methods.sampled import eval_task

    ev = evaluator_for(eval_task(spec, n=64, seed_start=0, rungs=(16, 32)))
    root = family_of(ev.loaded.denoiser).hook_root(ev.loaded.denoiser)
    poisoned: dict[str, float] = {}

    def poison(module, args, kwargs, output):
        scaling = getattr(module, "_test_rhos", None)
        if scaling is None:
            return output
        first = scaling[0]
        if isinstance(first, torch.Tensor) and first.numel() == output.shape[0]:
            if "rho" not in poisoned and not (first.flatten() == first.max()).all():
                poisoned["rho"] = float(first.min())  # the trial to fail: chosen once
            if "rho" in poisoned:
                low = first.flatten() == poisoned["rho"]
                return torch.where(low.reshape(-1, 1, 1, 1), torch.nan, output)
        return output

    from skipsearch.hooks import scaling as scaling_module

    original = scaling_module.SkipScaling._capture

    def capture(self, sigma_of):
        inner = original(self, sigma_of)

        def hook(module, args, kwargs):
            inner(module, args, kwargs)
            module._test_rhos = self._now

        return hook

    scaling_module.SkipScaling._capture = capture
    handle = root.register_forward_hook(poison, with_kwargs=True)
    try:
        trials, _, claims = _study(tmp_path, spec.model_copy(update={"search": spec.search.model_copy(
            update={"trials": 3})}))
    finally:
        handle.remove()
        scaling_module.SkipScaling._capture = original
        root.__dict__.pop("_test_rhos", None)
    assert poisoned and not claims
    failed = trials[trials.state == "FAIL"]
    assert len(failed) == 1 and failed.error.iloc[0].startswith("SampleError: non-finite values in samples")
    assert parse_coefficients(failed.coefficients_json.iloc[0]).rho_top == pytest.approx(poisoned["rho"], rel=1e-6)
    assert set(trials[trials.state != "FAIL"].state) == {"COMPLETE"}  # the baseline and the other trial


def test_an_interrupted_batch_loses_and_repeats_nothing(tmp_path):
    spec = _spec("batched-stop", trials=5)
    from skipsearch.evaluate import evaluator_for
    from skipsearch.methods.sampled import eval_task

    ev = evaluator_for(eval_task(spec, n=64, seed_start=0, rungs=(16, 32)))
    calls = {"n": 0}

    def interrupt(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 12:  # inside the first batch's second rung
            raise KeyboardInterrupt

    handle = ev.loaded.denoiser.register_forward_pre_hook(interrupt, with_kwargs=True)
    url = f"sqlite:///{tmp_path / 'b.db'}"
    ctx = open_study(spec, url, echo=lambda line: None)
    try:
        with pytest.raises(KeyboardInterrupt):
            driver.search(ctx, 5, progress=False)
    finally:
        handle.remove()
        ctx.close()
    ctx = open_study(spec, url, echo=lambda line: None)
    try:
        stopped = ctx.store.trials_frame(spec.name)
        assert len(stopped) == 3 and set(stopped.state) == {"FAIL"} and not stopped.evaluated.any()
        assert stopped.error.str.startswith("interrupted (KeyboardInterrupt)").all()
        driver.search(ctx, 5, progress=False)
        trials = ctx.store.trials_frame(spec.name)
    finally:
        ctx.close()
    done = trials[trials.evaluated.astype(bool)]
    assert len(done) == 5 and set(done.state) <= {"COMPLETE", "PRUNED"}
    assert (done.role == "baseline").sum() == 1


def test_auto_runs_one_trial_at_a_time_on_a_cpu(tmp_path):
    spec = parse_spec(tiny_spec_dict("auto-cpu"))
    assert spec.search.batch_trials == "auto"
    ctx = open_study(spec, f"sqlite:///{tmp_path / 'a.db'}", echo=lambda line: None)
    try:
        assert trials_per_batch(ctx, 10) == 1
        explicit = spec.model_copy(update={"search": spec.search.model_copy(update={"batch_trials": 8})})
        ctx.spec = explicit
        assert trials_per_batch(ctx, 5) == 5  # never more than the budget left
    finally:
        ctx.close()


@pytest.mark.parametrize("value", [0, 65, "many", 2.5])
def test_a_bad_batch_trials_names_the_field(tmp_path, value):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict("bad", search={"batch_trials": value})))
    result = cli("run", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "search.batch_trials" in output and "Traceback" not in output, output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="auto batch size is measured on a GPU; none is visible")
def test_auto_batches_more_than_one_trial_on_a_gpu(tmp_path):
    spec = parse_spec(tiny_spec_dict("auto-gpu", device="cuda"))
    ctx = open_study(spec, f"sqlite:///{tmp_path / 'g.db'}", echo=lambda line: None)
    try:
        assert 1 < trials_per_batch(ctx, 64) <= 16
    finally:
        ctx.close()
