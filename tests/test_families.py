"""The contract every model family keeps, run over each: rho = 1 is the identity bit for bit; a non-trivial rho
changes the output; the skip points' number, order and levels match the architecture (found here independently,
from the tensors a forward pass makes); apply then remove leaves weights and output unchanged; applying twice is
refused; an exception inside ``with`` removes the hooks; a time window is read from each family's own noise
argument (sigma, or a diffusers timestep)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import families
import pytest
import torch
from torch import nn

from skipsearch import apply
from skipsearch.errors import UserError
from skipsearch.hooks import SkipScaling
from skipsearch.methods.skip_tuning.schedules import LinearSkip, PerLevelSkip, TimeWindowSkip
from skipsearch.models import family_of, load_model
from skipsearch.models.hooked import HookedModel, declare

pytest.importorskip("diffusers")


@dataclass
class Case:
    target: Any  # what apply() is given
    root: nn.Module  # the module whose parameters must survive
    call: Callable[[float], torch.Tensor]  # one network evaluation at a noise level sigma
    input_size: int  # the network input's resolution (levels are counted from it)
    expected: Callable[[], list[int]]  # each skip tensor's resolution, outermost first, found from a forward pass


def _diffusers_skips(unet: nn.Module, run: Callable[[], Any]) -> Callable[[], list[int]]:
    """Resolutions of ``down_block_res_samples`` as the UNet builds it: conv_in's output, then each down block's
    res_samples."""

    def expected() -> list[int]:
        sizes: list[int] = []
        handles = [unet.conv_in.register_forward_hook(lambda m, a, out: sizes.append(out.shape[-1]))]
        for block in unet.down_blocks:
            handles.append(block.register_forward_hook(lambda m, a, out: sizes.extend(t.shape[-1] for t in out[1])))
        try:
            run()
        finally:
            for h in handles:
                h.remove()
        return sizes

    return expected


def _case_embedded(tmp_path) -> Case:
    loaded = load_model("embedded-digits")
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    net = loaded.denoiser.net
    return Case(loaded.denoiser, loaded.denoiser, lambda s: loaded.denoiser(x, torch.full((2,), s)), 16,
                lambda: [16 >> level for level in range(net.levels)])


def _case_vp(loaded, labels=None) -> Case:
    shape = loaded.info.shape
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    kw = {} if labels is None else {"class_labels": torch.tensor(labels)}
    d = loaded.denoiser

    def call(s: float) -> torch.Tensor:
        return d(x, torch.full((2,), s), **kw)

    return Case(d, d, call, shape[-1], _diffusers_skips(d.unet, lambda: call(1.0)))


def _case_unet2d(tmp_path) -> Case:
    return _case_vp(load_model(_section(families.ddpm_folder(tmp_path / "ddpm"))))


def _case_unet2d_classes(tmp_path) -> Case:
    return _case_vp(load_model(_section(families.ddpm_folder(tmp_path / "ddpm", num_class_embeds=3))), [0, 2])


def _case_text_latent(tmp_path) -> Case:
    folder = families.latent_text_folder(tmp_path / "sd")
    return _case_vp(load_model(_section(folder, prompts=str(folder / "prompts.txt"))), [0, 1])


def _case_pipeline_object(tmp_path) -> Case:
    """A user's own DDPMPipeline object, applied to directly; the UNet is called at a timestep."""
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(families.ddpm_folder(tmp_path / "ddpm"), use_safetensors=True)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    sigmas = ((1 - pipe.scheduler.alphas_cumprod) / pipe.scheduler.alphas_cumprod).sqrt()

    def call(s: float) -> torch.Tensor:  # the timestep whose sigma is nearest s
        t = int((sigmas - s).abs().argmin())
        return pipe.unet(x, t).sample

    return Case(pipe, pipe.unet, call, 16, _diffusers_skips(pipe.unet, lambda: call(1.0)))


def _case_hooked(tmp_path) -> Case:
    net = declare(families.UserUNet().eval(), HookedModel.model_validate(families.user_section()))
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return Case(net, net, lambda s: net(x, torch.full((2,), s)), 16, lambda: [16, 8])


def _case_edm(tmp_path, kind: str) -> Case:
    """An NVlabs EDM network (built with NVlabs' own classes, pickled as NVlabs saves it); skipped without
    NVlabs' code (SKIPSEARCH_EDM_CODE)."""
    from test_edm_nvlabs import REASON, contract_parts, edm_code

    if edm_code() is None:
        pytest.skip(REASON)
    denoiser, call, expected = contract_parts(tmp_path, kind)
    return Case(denoiser, denoiser, call, 16, expected)


def _case_edm_songunet(tmp_path) -> Case:
    return _case_edm(tmp_path, "songunet")


def _case_edm_dhariwal(tmp_path) -> Case:
    return _case_edm(tmp_path, "dhariwal")


def _case_edm_ncsnpp(tmp_path) -> Case:
    return _case_edm(tmp_path, "ncsnpp")


def _section(folder, **extra):
    from skipsearch.models.diffusers_unet import DiffusersModel

    return DiffusersModel(path=str(folder), **extra)


CASES = {"embedded": _case_embedded, "diffusers-unet2d": _case_unet2d,
         "diffusers-unet2d-classes": _case_unet2d_classes, "diffusers-text-latent": _case_text_latent,
         "diffusers-pipeline-object": _case_pipeline_object, "hooked": _case_hooked,
         "edm-songunet": _case_edm_songunet, "edm-dhariwal": _case_edm_dhariwal, "edm-ncsnpp": _case_edm_ncsnpp}


@pytest.fixture(params=list(CASES))
def case(request, tmp_path) -> Case:
    with torch.no_grad():
        yield CASES[request.param](tmp_path)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def test_identity_is_bit_for_bit_and_rho_changes_the_output(case):
    plain = case.call(1.0)
    with apply(case.target, LinearSkip()):
        assert torch.equal(case.call(1.0), plain)
    with apply(case.target, LinearSkip(rho_top=0.6, rho_bottom=1.4)):
        changed = case.call(1.0)
    assert not torch.allclose(changed, plain)


@torch.no_grad()
def test_skip_points_match_the_architecture(case):
    family = family_of(case.target)
    points = family.skip_points(case.target)
    sizes = case.expected()
    assert len(points) == len(sizes) >= 2
    assert [p.index for p in points] == list(range(len(points)))
    assert [p.level for p in points] == [round(math.log2(case.input_size / s)) for s in sizes]
    assert all(a.level <= b.level for a, b in zip(points, points[1:]))  # outermost first


def _seen_by_consumer(case: Case, point, rhos: list[float]) -> torch.Tensor:
    """The skip tensor as ``point``'s consuming module receives it, with ``rhos`` on every point."""
    family = family_of(case.target)
    seen: dict[str, torch.Tensor] = {}

    def grab(module, args, kwargs):
        seen["skip"] = point.skip_of(args, kwargs).clone()

    scaling = SkipScaling(family.hook_root(case.target), family.skip_points(case.target),
                          family.sigma_of(case.target), rhos)
    handle = point.module.register_forward_pre_hook(grab, with_kwargs=True)  # runs after the scaling hook
    try:
        case.call(1.0)
    finally:
        handle.remove()
        scaling.remove()
    return seen["skip"]


@torch.no_grad()
def test_each_point_scales_its_own_tensor(case):
    """Halving one point at a time changes the tensor its consumer sees, and only that one: the order of the
    points is the order in which the network makes its skips."""
    points = family_of(case.target).skip_points(case.target)
    for k, point in enumerate(points):
        plain = _seen_by_consumer(case, point, [1.0] * len(points))
        halved = _seen_by_consumer(case, point, [0.5 if j == k else 1.0 for j in range(len(points))])
        if hasattr(point, "start"):  # a channel slice: only its channels change
            assert torch.equal(halved[:, point.start:point.stop], plain[:, point.start:point.stop] * 0.5)
            assert torch.equal(halved[:, :point.start], plain[:, :point.start])
        else:
            assert torch.equal(halved, plain * 0.5)


@torch.no_grad()
def test_apply_then_remove_leaves_weights_and_output(case):
    before, plain = _state(case.root), case.call(1.0)
    handle = apply(case.target, LinearSkip(rho_top=0.7, rho_bottom=1.2))
    case.call(1.0)
    handle.remove()
    after = _state(case.root)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(case.call(1.0), plain)
    assert all(not m._forward_pre_hooks for m in case.root.modules())


def test_applying_twice_is_refused(case):
    with apply(case.target, LinearSkip(rho_top=0.9)):
        with pytest.raises(UserError, match="already applied"):
            apply(case.target, LinearSkip(rho_top=1.1))


@torch.no_grad()
def test_an_error_inside_with_removes_the_hooks(case):
    plain = case.call(1.0)
    with pytest.raises(RuntimeError, match="inside"):
        with apply(case.target, LinearSkip(rho_top=0.5, rho_bottom=0.5)):
            raise RuntimeError("inside")
    assert all(not m._forward_pre_hooks for m in case.root.modules())
    assert torch.equal(case.call(1.0), plain)


@torch.no_grad()
def test_a_time_window_reads_each_familys_noise_level(case):
    """rho applies only where the call's own sigma is inside the window: outside it the output is the plain
    one bit for bit, inside it changes."""
    window = TimeWindowSkip(rho_top=0.5, rho_bottom=0.5, sigma_lo=2.0, sigma_hi=5.0)
    inside, outside = case.call(3.0), case.call(0.5)
    with apply(case.target, window):
        assert torch.equal(case.call(0.5), outside)
        assert not torch.allclose(case.call(3.0), inside)


def test_per_level_fits_the_models_levels(case):
    levels = family_of(case.target).skip_points(case.target)
    n_levels = len({p.level for p in levels})
    with pytest.raises(UserError, match="resolution levels"):
        apply(case.target, PerLevelSkip(rho=(1.0,) * (n_levels + 1)))
    assert all(not m._forward_pre_hooks for m in case.root.modules())  # refused before any hook went on
    with apply(case.target, PerLevelSkip(rho=(0.9,) * n_levels)):
        pass
