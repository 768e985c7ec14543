"""FreeU (``kind: freeu``): switched on a diffusers UNet2DConditionModel through diffusers' own enable_freeu, off
again bit for bit (also after an error), never twice and never over the user's own FreeU; refused with one clear
error on models without FreeU; the baseline is FreeU off (b = s = 1 is not diffusers' identity, tested here); the
combined Skip-Tuning + FreeU coefficients go on and come off all or nothing; the spec's ranges name their field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import families
import optuna
import pytest
import torch
from torch import nn

from skipsearch import apply
from skipsearch.errors import UserError
from skipsearch.exchange import coeffile
from skipsearch.methods import METHODS, describe, method_for, method_of, parse_coefficients
from skipsearch.methods.freeu import FreeUMethod, active_on
from skipsearch.methods.freeu.factors import KEYS, FreeU, SkipFreeU
from skipsearch.methods.skip_tuning.schedules import LinearSkip, PerLevelSkip, TimeWindowSkip
from skipsearch.models import load_model, model_info
from skipsearch.specfile import changed_science, parse_spec

pytest.importorskip("diffusers")

ON = FreeU(b1=1.4, b2=1.6, s1=0.9, s2=0.2)
SKIP = LinearSkip(rho_top=0.7, rho_bottom=1.3)


@dataclass
class Case:
    target: Any  # what apply() is given
    unet: nn.Module  # the UNet whose up blocks FreeU switches
    call: Callable[[], torch.Tensor]  # one network evaluation


def _unet_case() -> Case:
    unet = families.cond_unet()
    g = torch.Generator().manual_seed(0)
    x, embeds = torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 3, 16, generator=g)
    return Case(unet, unet, lambda: unet(x, 10, encoder_hidden_states=embeds).sample)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return families.latent_text_folder(tmp_path_factory.mktemp("sd") / "sd")


def _section(folder, **extra):
    from skipsearch.models.diffusers_unet import DiffusersModel

    return DiffusersModel(path=str(folder), **extra)


def _pipeline_case(folder) -> Case:
    loaded = load_model(_section(folder, prompts=str(folder / "prompts.txt")))
    d = loaded.denoiser
    x = torch.randn(2, *loaded.info.shape, generator=torch.Generator().manual_seed(0))
    return Case(d, d.unet, lambda: d(x, torch.full((2,), 2.0), class_labels=torch.tensor([0, 1])))


@pytest.fixture(params=["unet", "pipeline"])
def case(request, folder):
    with torch.no_grad():
        yield _unet_case() if request.param == "unet" else _pipeline_case(folder)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _untouched(root: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    """Weights as before, no hook, and no FreeU attribute on any module."""
    after = _state(root)
    return (before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
            and all(not m._forward_pre_hooks and not m._forward_hooks for m in root.modules())
            and not any(k in vars(m) for m in root.modules() for k in KEYS))


# --- applying and removing -------------------------------------------------------------------------------------

def test_freeu_changes_the_output_and_removal_restores_it_bit_for_bit(case):
    before, plain = _state(case.unet), case.call()
    with apply(case.target, ON) as handle:
        assert active_on(case.unet) is handle
        assert all(b.b1 == 1.4 and b.s2 == 0.2 for b in case.unet.up_blocks)  # diffusers' own switch
        changed = case.call()
    assert not torch.allclose(changed, plain)
    assert torch.equal(case.call(), plain)
    assert _untouched(case.unet, before) and active_on(case.unet) is None
    handle.remove()  # a second removal does nothing
    with apply(case.target, ON):  # and it can go on again
        assert torch.equal(case.call(), changed)


def test_remove_without_with(case):
    plain = case.call()
    handle = method_for("freeu").apply(case.target, ON, None)
    assert not torch.equal(case.call(), plain)
    handle.remove()
    assert torch.equal(case.call(), plain)


def test_an_error_inside_with_switches_freeu_off(case):
    before, plain = _state(case.unet), case.call()
    with pytest.raises(RuntimeError, match="inside"):
        with apply(case.target, ON):
            raise RuntimeError("inside")
    assert torch.equal(case.call(), plain)
    assert _untouched(case.unet, before) and active_on(case.unet) is None


def test_applying_twice_is_refused(case):
    with apply(case.target, ON):
        on = case.call()
        with pytest.raises(UserError, match="already applied"):
            apply(case.target, FreeU(b1=1.1, b2=1.1, s1=0.5, s2=0.5))
        with pytest.raises(UserError, match="already applied"):  # through the pipeline or the bare UNet alike
            apply(case.unet, FreeU.off())
        assert torch.equal(case.call(), on)  # the first stays as it was


def test_freeu_the_user_switched_on_is_refused(case):
    case.unet.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    users = case.call()
    with pytest.raises(UserError, match="already enabled"):
        apply(case.target, ON)
    with pytest.raises(UserError, match="already enabled"):
        apply(case.target, FreeU.off())  # "off" would be a lie with the user's FreeU on
    assert torch.equal(case.call(), users) and active_on(case.unet) is None
    case.unet.disable_freeu()
    with apply(case.target, ON):
        pass


@pytest.mark.parametrize("which", ["embedded", "unet2d"])
@pytest.mark.parametrize("coefficients", [ON, SkipFreeU(skip=SKIP, freeu=ON)], ids=["freeu", "skip_freeu"])
@torch.no_grad()
def test_models_without_freeu_get_one_clear_error(which, coefficients):
    if which == "embedded":
        model = load_model("embedded-digits").denoiser
        x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))

        def call():
            return model(x, torch.full((2,), 1.0))
    else:
        model = families.unet2d()
        x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))

        def call():
            return model(x, 10).sample
    before, plain = _state(model), call()
    with pytest.raises(UserError, match="FreeU") as err:
        apply(model, coefficients)
    assert "Traceback" not in str(err.value) and len(str(err.value).splitlines()) == 1
    assert _untouched(model, before) and torch.equal(call(), plain)


# --- the baseline: FreeU off -----------------------------------------------------------------------------------

@torch.no_grad()
def test_diffusers_freeu_at_one_is_not_the_identity_so_the_baseline_is_off():
    """The decision, with its evidence: enable_freeu(b = s = 1) still sends the skips through an FFT and back,
    which changes their last bits; so all four factors exactly 1 mean FreeU off, and applying that changes
    nothing, bit for bit, while the nearest "on" values change the output (by rounding only)."""
    c = _unet_case()
    plain = c.call()
    c.unet.enable_freeu(s1=1.0, s2=1.0, b1=1.0, b2=1.0)
    ones = c.call()
    c.unet.disable_freeu()
    assert not torch.equal(ones, plain)  # diffusers' b = s = 1 is not the identity...
    assert torch.allclose(ones, plain, atol=1e-5)  # ...only by float rounding
    off = FreeU.off()
    assert off.is_identity() and off == FreeU(b1=1, b2=1, s1=1, s2=1) and describe(off.model_dump_json()) == \
        "freeu: off"
    with apply(c.unet, off) as handle:
        assert not handle.on and active_on(c.unet) is handle
        assert torch.equal(c.call(), plain)
        assert all(getattr(b, "s1", None) is None for b in c.unet.up_blocks)
    assert not FreeU(b1=1.0, b2=1.0, s1=1.0, s2=0.999).is_identity()


def test_the_baseline_trial_is_freeu_off():
    method, info = METHODS["freeu"], _cond_info()
    spec = parse_spec({"name": "f", "kind": "freeu"})
    params = method.baseline(spec, info)
    assert params == {"b1": 1.0, "b2": 1.0, "s1": 1.0, "s2": 1.0}
    coefficients = method.suggest(optuna.trial.FixedTrial(params), spec, info)
    assert coefficients == FreeU.off() and coefficients.is_identity()


@pytest.mark.parametrize("family", ["linear", "per_level", "time_window"])
def test_the_combined_baseline_is_off_and_rho_one(family):
    method, info = METHODS["freeu"], _cond_info()
    spec = parse_spec({"name": "f", "kind": "freeu", "search": {"combine_skip": True, "skip": {"family": family}}})
    params = method.baseline(spec, info)
    assert {k: params[k] for k in KEYS} == dict.fromkeys(KEYS, 1.0)
    coefficients = method.suggest(optuna.trial.FixedTrial(params), spec, info)
    assert isinstance(coefficients, SkipFreeU) and coefficients.is_identity()
    assert coefficients.skip.family == family


def test_suggest_draws_the_named_parameters_in_their_ranges():
    method, info = METHODS["freeu"], _cond_info()
    spec = parse_spec({"name": "f", "kind": "freeu", "search": {"combine_skip": True, "skip": {"family": "linear"}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    c = method.suggest(trial, spec, info)
    assert list(trial.params) == ["b1", "b2", "s1", "s2", "rho_top", "rho_bottom"]
    assert 1.0 <= c.freeu.b1 <= 1.6 and 0.2 <= c.freeu.s2 <= 1.0 and 0.5 <= c.skip.rho_top <= 1.5
    plain = parse_spec({"name": "f", "kind": "freeu"})
    assert isinstance(method.suggest(study.ask(), plain, info), FreeU)


# --- Skip-Tuning and FreeU together ----------------------------------------------------------------------------

def test_the_combined_coefficients_apply_both_and_remove_both(case):
    before, plain = _state(case.unet), case.call()
    with apply(case.target, SKIP):
        skip_only = case.call()
        with apply(case.target, ON):
            both_separately = case.call()
    with apply(case.target, ON):
        freeu_only = case.call()
    with apply(case.target, SkipFreeU(skip=SKIP, freeu=ON)):
        both = case.call()
        assert active_on(case.unet) is not None
        assert any(m._forward_pre_hooks for m in case.unet.modules())
    assert torch.equal(both, both_separately)
    assert not torch.allclose(both, skip_only) and not torch.allclose(both, freeu_only)
    assert torch.equal(case.call(), plain) and _untouched(case.unet, before)


def test_combined_at_the_baseline_is_the_plain_model(case):
    plain = case.call()
    with apply(case.target, SkipFreeU(skip=LinearSkip(), freeu=FreeU.off())):
        assert torch.equal(case.call(), plain)


def test_a_failing_freeu_part_takes_the_skip_hooks_off(case):
    before = _state(case.unet)
    case.unet.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)  # the user's own: the FreeU part is refused
    with pytest.raises(UserError, match="already enabled"):
        apply(case.target, SkipFreeU(skip=SKIP, freeu=ON))
    assert all(not m._forward_pre_hooks for m in case.unet.modules()) and active_on(case.unet) is None
    case.unet.disable_freeu()
    for block in case.unet.up_blocks:  # the user's own attributes, left by disable_freeu
        for k in KEYS:
            delattr(block, k)
    assert _untouched(case.unet, before)


def test_enable_freeu_failing_halfway_leaves_nothing(case, monkeypatch):
    before, plain = _state(case.unet), case.call()
    unet = case.unet

    def broken(**factors):
        unet.up_blocks[0].s1 = factors["s1"]  # half switched on, then a failure
        raise RuntimeError("enable_freeu broke")

    monkeypatch.setattr(unet, "enable_freeu", broken, raising=False)
    for coefficients in (ON, SkipFreeU(skip=TimeWindowSkip(rho_top=0.5, sigma_lo=1.0, sigma_hi=5.0), freeu=ON)):
        with pytest.raises(RuntimeError, match="broke"):
            apply(case.target, coefficients)
        assert active_on(unet) is None
        assert torch.equal(case.call(), plain)
        monkeypatch.undo()
        assert _untouched(unet, before)
        monkeypatch.setattr(unet, "enable_freeu", broken, raising=False)


def test_a_skip_schedule_that_does_not_fit_changes_nothing(case):
    before = _state(case.unet)
    with pytest.raises(UserError, match="resolution levels"):
        apply(case.target, SkipFreeU(skip=PerLevelSkip(rho=(1.0,) * 9), freeu=ON))
    assert _untouched(case.unet, before) and active_on(case.unet) is None


# --- coefficients, files, the spec -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"b1": 0.0}, {"s2": 0.0}, {"b2": 3.5}, {"s1": float("nan")},
                                 {"b1": float("inf")}, {"s1": -1.0}])
def test_coefficients_are_validated(bad):
    with pytest.raises(ValueError):
        FreeU(**{**ON.model_dump(exclude={"family"}), **bad})


def test_coefficients_round_trip_and_belong_to_freeu(tmp_path, case):
    combined = SkipFreeU(skip=TimeWindowSkip(rho_top=0.8, rho_bottom=1.2, sigma_lo=0.5, sigma_hi=5.0), freeu=ON)
    for c in (ON, FreeU.off(), combined):
        assert parse_coefficients(c.model_dump_json()) == c
        assert isinstance(method_of(c), FreeUMethod)
        for suffix in ("toml", "yaml", "json"):
            path = coeffile.write(coeffile.CoefficientFile(c), tmp_path / f"c.{suffix}")
            assert coeffile.read(path).coefficients == c
    assert describe(ON.model_dump_json()) == "freeu: b1=1.4 b2=1.6 s1=0.9 s2=0.2"
    assert describe(combined.model_dump_json()).startswith("skip_freeu: [time_window: ")
    plain = case.call()
    path = coeffile.write(coeffile.CoefficientFile(combined), tmp_path / "file.toml")
    with apply(case.target, path):  # the user's path: a coefficient file
        assert not torch.equal(case.call(), plain)
    assert torch.equal(case.call(), plain)


def test_a_spec_with_defaults_parses():
    spec = parse_spec({"name": "f", "kind": "freeu"})
    s = spec.search
    assert spec.kind == "freeu" and s.b_range == (1.0, 1.6) and s.s_range == (0.2, 1.0) and not s.combine_skip
    combined = parse_spec({"name": "f", "kind": "freeu",
                           "search": {"combine_skip": True, "skip": {"family": "per_level", "rho_range": [0.8, 1.2]}}})
    assert combined.search.skip.family == "per_level" and combined.search.skip.rho_range == (0.8, 1.2)


@pytest.mark.parametrize("search", [{}, {"combine_skip": True},
                                    {"combine_skip": True, "skip": {"family": "time_window"}},
                                    {"b_range": [0.9, 1.2], "s_range": [1.0, 1.5]}])
def test_a_stored_spec_reads_back_the_same(search):
    """The database keeps the spec as dumped (every field, search.skip's budget fields too): it reads back equal."""
    spec = parse_spec({"name": "f", "kind": "freeu", "search": search})
    stored = spec.model_dump(mode="json")
    assert parse_spec(stored) == spec and changed_science(stored, spec) == []


@pytest.mark.parametrize(("search", "field"), [
    ({"b_range": [1.2, 1.6]}, "search.b_range"),  # the baseline (1) outside
    ({"s_range": [0.2, 0.9]}, "search.s_range"),
    ({"b_range": [1.0, 1.0]}, "search.b_range"),
    ({"b_range": [0.0, 1.5]}, "search.b_range[0]"),
    ({"s_range": [0.5, 4.0]}, "search.s_range[1]"),
    ({"s_range": [0.5, float("nan")]}, "search.s_range[1]"),
    ({"skip": {"family": "per_level"}}, "search.skip"),  # without combine_skip
    ({"combine_skip": True, "skip": {"rho_range": [1.1, 1.5]}}, "search.skip"),  # Skip-Tuning's own check
    ({"combine_skip": True, "skip": {"trials": 3}}, "search.skip"),
    ({"b_ranges": [1.0, 1.5]}, "search.b_ranges"),
])
def test_bad_search_sections_name_their_field(search, field):
    with pytest.raises(UserError) as err:
        parse_spec({"name": "f", "kind": "freeu", "search": search}, "f.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "f.yaml: invalid spec" and any(line.strip().startswith(f"{field}:") for line in lines[1:])


def _cond_info():
    """A text-conditioned UNet's facts, without building a pipeline folder."""
    from skipsearch.models.family import ModelInfo, SkipInfo

    skips = tuple(SkipInfo(index=i, level=lv, path=f"p{i}") for i, lv in enumerate((0, 0, 1, 1)))
    return ModelInfo(model_id="sd", family="diffusers", weights_hash="0" * 16, img_channels=1, resolution=16,
                     skips=skips, reference="", noise_shape=(2, 8, 8), schedulers=True, freeu=True)


def test_check_refuses_models_without_freeu(folder, tmp_path):
    method = METHODS["freeu"]
    spec = parse_spec({"name": "f", "kind": "freeu"})
    with pytest.raises(UserError) as err:
        method.check(spec, model_info(spec.model), "f.yaml")
    assert str(err.value).splitlines() == ["f.yaml: invalid spec", "  model: FreeU needs a diffusers "
                                           "UNet2DConditionModel (model.family: diffusers); embedded-digits has no "
                                           "enable_freeu"]
    ddpm = _section(families.ddpm_folder(tmp_path / "ddpm"))
    with pytest.raises(UserError, match="model: FreeU needs"):
        method.check(spec.model_copy(update={"model": ddpm}), model_info(ddpm), "f.yaml")
    sd = _section(folder, prompts=str(folder / "prompts.txt"))
    info = model_info(sd)
    assert info.freeu and method.check(spec.model_copy(update={"model": sd}), info, "f.yaml") == []


def test_profiles_show_b_and_s_per_stage():
    method, info = METHODS["freeu"], _cond_info()
    spec = parse_spec({"name": "f", "kind": "freeu"})
    (profile,) = method.profiles(spec, ON, info)
    assert [c.y for c in profile.curves] == [(1.4, 1.6), (0.9, 0.2)] and len(profile.x_ticks) == 2
    assert "off" in method.profiles(spec, FreeU.off(), info)[0].title
    window = SkipFreeU(skip=TimeWindowSkip(rho_top=0.8, sigma_lo=0.5, sigma_hi=5.0), freeu=ON)
    titles = [p.title for p in method.profiles(spec, window, info)]
    assert len(titles) == 3 and titles[1].startswith("rho over depth")
    assert "FreeU off" in method.header(spec) and method.fidelity(spec).rule == "none"


class _Evaluator:
    """Stands in for skipsearch.evaluate's evaluator: runs the network once per rung, recording its outputs."""

    def __init__(self, case: Case):
        self.loaded, self.case, self.outputs = type("Loaded", (), {"denoiser": case.target})(), case, []

    def _score(self, n: int):
        self.outputs.append(self.case.call())
        return type("Score", (), {"n": n, "wall_s": 0.0, "timings": {}})()

    def trials(self, task, layout, progress=False, shares=None):
        for n in (*task.rungs, task.n):
            yield {0: self._score(n)}

    def __call__(self, task, share=None):
        return self._score(task.n)


@torch.no_grad()
def test_a_trial_holds_freeu_while_it_runs_and_a_pruned_one_lets_go(case, monkeypatch):
    import skipsearch.evaluate

    ev = _Evaluator(case)
    monkeypatch.setattr(skipsearch.evaluate, "evaluator_for", lambda task: ev)
    method, plain = METHODS["freeu"], case.call()
    spec = parse_spec({"name": "f", "kind": "freeu", "metric": {"n": 64, "rungs": [32], "kid_subset_size": 16}})
    rungs = method.trial(spec, ON)
    first = next(rungs)
    assert first.progress == 32 and not first.final and active_on(case.unet) is not None
    rungs.close()  # pruned after its first rung
    assert active_on(case.unet) is None and torch.equal(case.call(), plain)
    assert [r.final for r in method.trial(spec, SkipFreeU(skip=SKIP, freeu=ON))] == [False, True]
    assert active_on(case.unet) is None and torch.equal(case.call(), plain)
    assert not torch.equal(ev.outputs[0], plain)
    method.heldout(spec, FreeU.off(), 0)
    assert torch.equal(ev.outputs[-1], plain) and active_on(case.unet) is None
