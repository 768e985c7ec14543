"""The hook layer's three kinds of skip point, on small modules shaped like the architectures they serve:
a skip passed as its own argument (the embedded UNet), one tensor of a tuple (diffusers' up blocks, which get
``res_hidden_states_tuple`` positionally or by keyword), and a channel slice of a concatenated input (NVlabs
EDM's ``cat([x, skips.pop()])``). Each: rho = 1 is the identity bit for bit, rho scales exactly its skip,
and removal leaves nothing behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skipsearch.errors import UserError
from skipsearch.hooks import ArgumentSkip, ChannelSlice, SkipScaling, TupleSkip


class TupleBlock(nn.Module):
    """Pops skips from the end of a tuple and concatenates them, as a diffusers up block does."""

    def forward(self, h: torch.Tensor, res_hidden_states_tuple: tuple[torch.Tensor, ...]) -> torch.Tensor:
        for skip in reversed(res_hidden_states_tuple):
            h = torch.cat([h, skip], dim=1)
        return h


class SliceBlock(nn.Module):
    """Receives cat([x, skip]) already concatenated, as an EDM UNetBlock does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class Net(nn.Module):
    def __init__(self, keyword: bool):
        super().__init__()
        self.keyword = keyword
        self.tuple_block, self.slice_block = TupleBlock(), SliceBlock()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = (x + 1, x + 2)
        h = self.tuple_block(x, res_hidden_states_tuple=skips) if self.keyword else self.tuple_block(x, skips)
        return h, self.slice_block(torch.cat([x, x + 3], dim=1))


def _points(net: Net) -> list:
    return [TupleSkip(index=0, level=0, module=net.tuple_block, path="tuple_block", position=1,
                      keyword="res_hidden_states_tuple", element=0),
            TupleSkip(index=1, level=0, module=net.tuple_block, path="tuple_block", position=1,
                      keyword="res_hidden_states_tuple", element=-1),
            ChannelSlice(index=2, level=1, module=net.slice_block, path="slice_block", position=0, start=2, stop=4)]


def _sigma_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return torch.as_tensor(args[1], dtype=torch.float64).reshape(-1)


@pytest.mark.parametrize("keyword", [False, True], ids=["positional", "keyword"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_tuple_and_slice_skips_scale_exactly_their_skip(keyword, grad):
    net = Net(keyword)
    x = torch.randn(3, 2, 4, 4, requires_grad=grad)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    with torch.set_grad_enabled(grad):
        plain_h, plain_s = net(x, sigma)
        with SkipScaling(net, _points(net), _sigma_of, lambda s: [1.0, 1.0, 1.0]):
            same_h, same_s = net(x, sigma)
        with SkipScaling(net, _points(net), _sigma_of, lambda s: [0.5, 2.0, 0.25]):
            h, s = net(x, sigma)
        after_h, after_s = net(x, sigma)
    assert torch.equal(plain_h, same_h) and torch.equal(plain_s, same_s)  # rho = 1: bit for bit
    # the block concatenates the tuple from its end: [x, skip 1, skip 0]
    assert torch.equal(h[:, :2], x) and torch.equal(h[:, 2:4], (x + 2) * 2.0) and torch.equal(h[:, 4:], (x + 1) * 0.5)
    assert torch.equal(s[:, :2], x) and torch.equal(s[:, 2:], (x + 3) * 0.25)
    assert torch.equal(after_h, plain_h) and torch.equal(after_s, plain_s)
    assert all(not m._forward_pre_hooks for m in net.modules())
    if grad:  # the slice was scaled on a copy, so autograd still flows to x through both halves
        s.sum().backward()
        assert x.grad is not None and torch.all(x.grad > 0)


def test_per_sample_rho_follows_sigma():
    net = Net(keyword=False)
    x, sigma = torch.randn(3, 2, 4, 4), torch.tensor([0.5, 1.0, 2.0])

    def rhos(s: torch.Tensor) -> list:
        inside = torch.where(s < 1.5, 0.5, 1.0).reshape(-1, 1, 1, 1)
        return [1.0, 1.0, inside]

    plain = net(x, sigma)[1]
    with SkipScaling(net, _points(net), _sigma_of, rhos):
        tuned = net(x, sigma)[1]
    assert torch.equal(tuned[:2, 2:], plain[:2, 2:] * 0.5) and torch.equal(tuned[2], plain[2])


def test_argument_skip_by_position_or_keyword():
    class Block(nn.Module):
        def forward(self, h, skip):
            return h + skip

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x, sigma):
            return self.block(x, x * 2), self.block(x, skip=x * 3)

    net = Outer()
    point = ArgumentSkip(index=0, level=0, module=net.block, path="block", position=1, keyword="skip")
    x, sigma = torch.ones(2, 1, 2, 2), torch.tensor([1.0, 1.0])
    with SkipScaling(net, [point], _sigma_of, lambda s: [0.5]):
        by_position, by_keyword = net(x, sigma)
    assert torch.equal(by_position, x + x) and torch.equal(by_keyword, x + 1.5 * x)


def test_one_scaling_per_model():
    net = Net(keyword=False)
    with SkipScaling(net, _points(net), _sigma_of, lambda s: [1.0] * 3):
        with pytest.raises(UserError, match="already applied"):
            SkipScaling(net, _points(net), _sigma_of, lambda s: [1.0] * 3)
    SkipScaling(net, _points(net), _sigma_of, lambda s: [1.0] * 3).remove()
