"""Skip-Tuning contract: identity at rho = 1, clean removal, the right skips in the right order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skipsearch import apply
from skipsearch.errors import UserError
from skipsearch.methods.skip_tuning.schedules import LinearSkip, PerLevelSkip, TimeWindowSkip
from skipsearch.models import SkipInfo

IDENTITIES = [LinearSkip(), PerLevelSkip(rho=(1.0, 1.0, 1.0)),
              TimeWindowSkip(rho_top=1.0, rho_bottom=1.0, sigma_lo=0.01, sigma_hi=10.0),
              # a window that excludes every sigma used below is the identity too
              TimeWindowSkip(rho_top=0.5, rho_bottom=1.5, sigma_lo=500.0, sigma_hi=600.0)]


def _inputs(batch: int = 6):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, 1, 16, 16, generator=g)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 40.0][:batch])
    return x, sigma


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("coeffs", IDENTITIES, ids=lambda c: c.family)
def test_rho_one_is_bit_for_bit_identity(digits_model, coeffs):
    model = digits_model.denoiser
    x, sigma = _inputs()
    plain = model(x, sigma)
    with apply(model, coeffs):
        tuned = model(x, sigma)
    assert torch.equal(plain, tuned)


def test_apply_then_remove_restores_the_model(fresh_model):
    model = fresh_model.denoiser
    x, sigma = _inputs()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(x, sigma)
    handle = apply(model, LinearSkip(rho_top=1.2, rho_bottom=0.6))
    changed = model(x, sigma)
    handle.remove()
    after = model(x, sigma)
    assert not torch.equal(before, changed)
    assert torch.equal(before, after)
    assert _hooks(model) == 0
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())


def test_hooks_are_removed_on_error(fresh_model):
    model = fresh_model.denoiser
    with pytest.raises(ZeroDivisionError):
        with apply(model, LinearSkip(rho_top=0.7, rho_bottom=0.7)):
            raise ZeroDivisionError("inside the block")
    assert _hooks(model) == 0
    with apply(model, LinearSkip(rho_top=0.7)):  # and it can be applied again
        pass


def test_second_apply_on_same_model_is_refused(fresh_model):
    model = fresh_model.denoiser
    with apply(model, LinearSkip(rho_top=0.9)):
        with pytest.raises(UserError, match="already applied"):
            apply(model, LinearSkip(rho_top=0.8))


def _decoder_skips(model: nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> list[torch.Tensor]:
    """The skip argument each decoder block receives, in call order (recorders run after earlier hooks)."""
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_pre_hook(lambda m, a: seen.append(a[1].clone())) for b in model.net.dec]
    try:
        model(x, sigma)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_skips_found_in_order_innermost_consumed_first(fresh_model):
    """Scaling skip k (innermost) by 0.5 halves exactly the skip given to the first decoder block."""
    model = fresh_model.denoiser
    x, sigma = _inputs()
    plain = _decoder_skips(model, x, sigma)
    with apply(model, PerLevelSkip(rho=(1.0, 1.0, 0.5))):
        tuned = _decoder_skips(model, x, sigma)
    assert [t.shape[-1] for t in plain] == [4, 8, 16]  # innermost (4x4) first
    assert torch.equal(tuned[0], plain[0] * 0.5)
    assert torch.equal(tuned[1], plain[1]) and torch.equal(tuned[2], plain[2])


def _skips(levels: list[int]) -> list[SkipInfo]:
    return [SkipInfo(index=i, level=level, path=f"block{i}") for i, level in enumerate(levels)]


def test_linear_profile_matches_paper_formula():
    c = LinearSkip(rho_top=1.0, rho_bottom=0.4)
    assert c.depth_profile(_skips([0, 1, 2, 3])) == pytest.approx([1.0, 0.8, 0.6, 0.4])
    with pytest.raises(UserError, match="3 rho values"):
        PerLevelSkip(rho=(1.0, 1.0, 1.0)).depth_profile(_skips([0, 1, 2, 3]))


def test_several_skips_per_level():
    """linear runs over the skip index; per_level gives every skip of a level that level's rho."""
    skips = _skips([0, 0, 1, 1, 2])
    assert LinearSkip(rho_top=1.0, rho_bottom=0.6).depth_profile(skips) == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6])
    assert PerLevelSkip(rho=(1.0, 0.8, 0.5)).depth_profile(skips) == [1.0, 1.0, 0.8, 0.8, 0.5]


def test_time_window_applies_only_inside_the_window(fresh_model):
    model = fresh_model.denoiser
    x, sigma = _inputs()  # sigmas 0.01 .. 40
    plain = model(x, sigma)
    with apply(model, TimeWindowSkip(rho_top=0.3, rho_bottom=0.3, sigma_lo=0.2, sigma_hi=2.0)):
        tuned = model(x, sigma)
    inside = (sigma >= 0.2) & (sigma <= 2.0)
    assert torch.equal(plain[~inside], tuned[~inside])
    assert not torch.equal(plain[inside], tuned[inside])


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UserError, match="no model family recognises Linear"):
        apply(nn.Linear(2, 2), LinearSkip())


def test_coefficients_validate_their_fields():
    with pytest.raises(ValueError, match="sigma_lo"):
        TimeWindowSkip(sigma_lo=2.0, sigma_hi=1.0)
    with pytest.raises(ValueError):
        LinearSkip(rho_top=-1.0)


def _search(rho_range):
    from skipsearch.methods.skip_tuning.skip_spec import SkipSearchSpec

    return SkipSearchSpec(family="linear", rho_range=rho_range)


def test_a_rho_at_an_end_of_its_range_is_named_with_the_spec_field():
    """The README demo's winner (rho_bottom 0.5029 in [0.5, 1.5]) sat at the floor the search could not pass."""
    from skipsearch.methods.skip_tuning.skip_space import at_edges

    said = at_edges(LinearSkip(rho_top=0.8138, rho_bottom=0.5029), _search((0.5, 1.5)))
    assert said == ("rho_bottom = 0.5029 at the lower end of search.rho_range [0.5, 1.5]",)
    said = at_edges(PerLevelSkip(rho=(1.49, 0.9, 0.5)), _search((0.5, 1.5)))
    assert [s.split(" = ")[0] for s in said] == ["rho_0", "rho_2"] and "upper end" in said[0]
    window = TimeWindowSkip(rho_top=1.4, rho_bottom=0.7, sigma_lo=0.002, sigma_hi=80.0)  # window ends: not rho
    assert at_edges(window, _search((0.5, 1.5))) == ()
    assert at_edges(LinearSkip(rho_top=0.53, rho_bottom=1.46), _search((0.5, 1.5))) == ()  # 3% and 4% in: inside
    assert at_edges(LinearSkip(rho_top=0.995, rho_bottom=1.0), _search((0.9, 1.001))) == (
        "rho_bottom = 1 at the upper end of search.rho_range [0.9, 1.001]",)  # 2% of a narrow range
