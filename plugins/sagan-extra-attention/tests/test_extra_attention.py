"""The plugin package's own tests: its modules keep the attention contract."""

import pytest
import sagan_extra_attention as extra
import torch
from sagan_extra_attention.modules import inner_channels

from sagan_cli.api import LayerContext


def context(channels: int, partners: torch.Tensor | None = None) -> LayerContext:
    """A place to build at (8x8), without weight norm."""
    return LayerContext("g", 32, 0, channels, 8, lambda layer: layer, partners)


@pytest.mark.parametrize(
    "build, params",
    [(extra.build_multihead, extra.MultiHeadParams()), (extra.build_linear, extra.LinearParams())],
)
def test_shape_identity_at_init_and_gradients(build, params):
    module = build(params, context(32))
    x = torch.randn(2, 32, 6, 10, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)  # gamma starts at 0: the block begins as the identity
    with torch.no_grad():
        module.gamma.fill_(1.0)
    y = module(x)
    assert not torch.allclose(y, x)
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_linear_attention_rows_are_convex_combinations():
    """With v = identity-like values the output lies inside the values' range (weights >= 0, sum 1)."""
    module = extra.build_linear(extra.LinearParams(reduction=2), context(8))
    with torch.no_grad():
        module.gamma.fill_(1.0)
    x = torch.randn(1, 8, 4, 4)
    values = module.value(x).flatten(2)
    out = (module(x) - x).flatten(2)
    assert (out <= values.amax(dim=2, keepdim=True) + 1e-5).all()
    assert (out >= values.amin(dim=2, keepdim=True) - 1e-5).all()


def test_inner_channels_divisible_by_heads():
    assert inner_channels(64, 2, 4) == 32
    assert inner_channels(12, 2, 4) == 4
    assert inner_channels(4, 8, 4) == 4


def test_multihead_uses_a_fused_kernel_without_an_n_by_n_map():
    module = extra.build_multihead(extra.MultiHeadParams(heads=2), context(16))
    saved = []
    x = torch.randn(1, 16, 32, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        module(x)
    assert max(saved) < 1024 * 1024 // 4  # an N x N map per head would be 2 x 1024 x 1024


def test_multihead_maps_equal_the_heads_softmax_and_drive_the_block():
    """attention_maps is what the block computes: averaging its heads' outputs agrees."""
    module = extra.build_multihead(extra.MultiHeadParams(heads=1, reduction=1), context(8))
    x = torch.randn(1, 8, 4, 4)
    beta = module.attention_maps(x)
    _, _, v = module._heads(x)
    torch.testing.assert_close(beta.sum(-1), torch.ones(1, 16))
    expected = (beta @ v[:, 0]).transpose(1, 2).reshape(1, -1, 4, 4)
    with torch.no_grad():
        module.gamma.fill_(1.0)
        torch.testing.assert_close(module(x) - x, module.out(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["multihead", "linear", "oracle"])
def test_the_sagan_contract(name):
    """sagan-cli's own contract check, in-process, at a quick subset of its places."""
    from sagan_cli.testing import check_plugin

    rows = check_plugin(name, placements=["g16", "d8@64"])
    assert {row.outcome for row in rows} == {"ok"}


def test_the_oracle_copies_from_the_declared_partner_and_starts_as_the_identity():
    partners = torch.arange(64).flip(0)  # position j depends on position 63 - j
    module = extra.build_oracle(extra.OracleParams(), context(4, partners))
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(module(x), x)
    with torch.no_grad():
        module.gamma.fill_(1.0)
        module.value.weight.copy_(torch.eye(4)[:, :, None, None])
        module.out.weight.copy_(torch.eye(4)[:, :, None, None])
    torch.testing.assert_close(module(x), x + x.flatten(2).flip(2).reshape_as(x))
    beta = module.attention_maps(x)
    assert beta.shape == (2, 64, 64) and torch.equal(beta[0].argmax(-1), partners)


def test_the_oracle_refuses_data_without_a_declared_dependency():
    from sagan_cli.api import PluginError

    with pytest.raises(PluginError, match=r"partners\(size\)"):
        extra.build_oracle(extra.OracleParams(), context(4))
