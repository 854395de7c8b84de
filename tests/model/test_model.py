"""SAGAN networks: the attention equations, spectral norm, every variant in G and D, losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sagan_cli.api import LayerContext
from sagan_cli.builtins.attention import PooledParams, SaganParams, build_pooled, build_sagan
from sagan_cli.components import build_networks, count_parameters
from sagan_cli.model import arch
from sagan_cli.model.attention import SelfAttention2d
from sagan_cli.model.losses import Hinge, LeastSquares, NonSaturating, WassersteinGP
from sagan_cli.plugins import get_registry
from sagan_cli.recipe import resolve_recipe

IDENTITY = lambda layer: layer  # noqa: E731 - no weight norm: the raw equations


def plain(channels: int, size: int = 8) -> LayerContext:
    """Where a block is built, with no weight norm: the raw equations."""
    return LayerContext("g", 32, 0, channels, size, IDENTITY)


def attention_module(variant: str, channels: int, gamma: float = 0.7) -> SelfAttention2d:
    torch.manual_seed(0)
    if variant == "sagan":
        module = build_sagan(SaganParams(), plain(channels))
    else:
        module = build_pooled(PooledParams(), plain(channels))
    with torch.no_grad():
        module.gamma.fill_(gamma)
    return module


def paper_equations(module: SelfAttention2d, x: torch.Tensor) -> torch.Tensor:
    """y = gamma * v(sum_i beta_ji h(x_i)) + x, written out from the paper with einsum."""
    batch, channels, height, width = x.shape
    f = module.f.weight[:, :, 0, 0]  # (C_k, C)
    g = module.g.weight[:, :, 0, 0]
    h = module.h.weight[:, :, 0, 0]  # (C_v, C)
    v = module.v.weight[:, :, 0, 0]  # (C, C_v)
    keys_in, values_in = x, x
    if module.pool > 1:
        keys_in = values_in = F.max_pool2d(x, 1)  # pooling acts after the projections, below
    fx = torch.einsum("kc,bchw->bkhw", f, keys_in)
    hx = torch.einsum("kc,bchw->bkhw", h, values_in)
    if module.pool > 1:
        fx, hx = F.max_pool2d(fx, module.pool), F.max_pool2d(hx, module.pool)
    gx = torch.einsum("kc,bchw->bkhw", g, x).flatten(2)  # (B, C_k, N)
    fx, hx = fx.flatten(2), hx.flatten(2)  # (B, C_k, M), (B, C_v, M)
    s = torch.einsum("bki,bkj->bij", fx, gx)  # s_ij = f(x_i)^T g(x_j): (B, M, N)
    beta = torch.softmax(s, dim=1)  # beta_{j,i}: normalised over i
    o = torch.einsum("bij,bvi->bvj", beta, hx)  # sum_i beta_ji h(x_i): (B, C_v, N)
    o = torch.einsum("cv,bvn->bcn", v, o).reshape(batch, channels, height, width)
    return module.gamma * o + x


SHAPES = [(2, 16, 8, 8), (1, 32, 6, 10), (3, 64, 16, 16), (2, 24, 4, 12)]


@pytest.mark.parametrize("variant", ["sagan", "sagan_pooled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_path_equals_the_equations(variant, shape):
    module = attention_module(variant, shape[1])
    x = torch.randn(*shape)
    fused = module(x)
    explicit, _ = module.forward_explicit(x)
    written_out = paper_equations(module, x)
    torch.testing.assert_close(fused, written_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit, written_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["sagan", "sagan_pooled"])
def test_fused_gradients_equal_explicit_gradients(variant):
    module = attention_module(variant, 16)
    x = torch.randn(2, 16, 8, 6, requires_grad=True)
    (grad_fused,) = torch.autograd.grad(module(x).square().sum(), x)
    (grad_explicit,) = torch.autograd.grad(module.forward_explicit(x)[0].square().sum(), x)
    torch.testing.assert_close(grad_fused, grad_explicit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["sagan", "sagan_pooled"])
def test_gamma_zero_is_exactly_the_identity(variant):
    module = attention_module(variant, 32, gamma=0.0)
    x = torch.randn(2, 32, 8, 8)
    assert torch.equal(module(x), x)
    assert build_sagan(SaganParams(), plain(32)).gamma.item() == 0.0  # the initial value


@pytest.mark.parametrize("variant, positions", [("sagan", 64), ("sagan_pooled", 16)])
def test_attention_rows_sum_to_one(variant, positions):
    module = attention_module(variant, 16)
    _, beta = module.forward_explicit(torch.randn(3, 16, 8, 8))
    assert beta.shape == (3, 64, positions)
    assert (beta >= 0).all()
    torch.testing.assert_close(beta.sum(dim=-1), torch.ones(3, 64))


def test_permuting_positions_permutes_the_output():
    module = attention_module("sagan", 16)
    x = torch.randn(2, 16, 6, 6)
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(1))

    def permute(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2)[:, :, perm].reshape_as(t)

    torch.testing.assert_close(module(permute(x)), permute(module(x)), rtol=1e-5, atol=1e-5)


def test_pooled_attention_is_equivariant_to_moving_whole_pooling_cells():
    module = attention_module("sagan_pooled", 16)
    x = torch.randn(2, 16, 8, 8)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(2))

    def permute_cells(t: torch.Tensor) -> torch.Tensor:  # 2x2 cells of a 4x4 grid of cells
        cells = t.reshape(2, 16, 4, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 16, 16, 2, 2)
        cells = cells[:, :, perm].reshape(2, 16, 4, 4, 2, 2).permute(0, 1, 2, 4, 3, 5)
        return cells.reshape(2, 16, 8, 8)

    torch.testing.assert_close(
        module(permute_cells(x)), permute_cells(module(x)), rtol=1e-5, atol=1e-5
    )


def test_fused_attention_never_saves_the_attention_map():
    """What backward keeps grows with N, not N^2 (the explicit path keeps the N x N map)."""
    saved: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(t.shape))
        return t

    for variant, memory_format in [
        (v, f)
        for v in ("sagan", "sagan_pooled")
        for f in (torch.contiguous_format, torch.channels_last)
    ]:
        module = attention_module(variant, 64).to(memory_format=memory_format)
        x = torch.randn(1, 64, 32, 32).to(memory_format=memory_format).requires_grad_(True)
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(x)
        largest = max(torch.Size(s).numel() for s in saved)
        assert largest < 1024 * 256, (
            variant,
            sorted(saved, key=lambda s: -torch.Size(s).numel())[:3],
        )


# ---- whole networks -----------------------------------------------------------------------------


def tiny_recipe(resolution: int, variant: str = "sagan", **model: object):
    params = {"attention_layer": [], "g_channels": 2, "d_channels": 2, "z_dim": 8, **model}
    return resolve_recipe(
        {
            "name": "t",
            "data": {"resolution": resolution},
            "model": {**params, "attention": {"variant": variant}},
        },
        origin="test",
    )


def run_both(recipe, num_classes: int = 0, batch: int = 2):
    generator, discriminator = build_networks(recipe, num_classes)
    z = torch.randn(batch, recipe.model.z_dim)
    labels = torch.arange(batch) % num_classes if num_classes else None
    images = generator(z, labels)
    logits = discriminator(images, labels)
    return generator, discriminator, images, logits


@pytest.mark.parametrize(
    "resolution",
    [pytest.param(r, marks=pytest.mark.slow) if r >= 128 else r for r in arch.RESOLUTIONS],
)
@pytest.mark.parametrize("variant", sorted(get_registry().names("attention")))
def test_every_attention_variant_trains_in_g_and_d(variant, resolution):
    """Every registered variant (built-ins and installed plugins) at every allowed placement."""
    recipe = tiny_recipe(
        resolution,
        variant,
        g_attention_layer=arch.generator_sizes(resolution),
        d_attention_layer=arch.discriminator_sizes(resolution),
    )
    generator, discriminator = build_networks(recipe, 0)
    for net in (generator, discriminator):
        for name, param in net.named_parameters():
            if name.endswith("gamma"):
                with torch.no_grad():
                    param.fill_(0.5)  # at 0 the attention weights would get no gradient
    images = generator(torch.randn(2, 8))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.abs().max() <= 1.0
    logits = discriminator(images)
    assert logits.shape == (2,)
    logits.sum().backward()
    for net in (generator, discriminator):
        expected = set(
            arch.generator_sizes(resolution)
            if net is generator
            else arch.discriminator_sizes(resolution)
        )
        assert {int(k) for k in net.attention} == expected
        for name, param in net.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            if name.startswith("attention."):
                assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "resolution, size", [(r, s) for r in arch.RESOLUTIONS for s in arch.shared_sizes(r)]
)
def test_shapes_at_every_resolution_and_placement(resolution, size):
    recipe = tiny_recipe(resolution, attention_layer=[size])
    generator, discriminator, images, logits = run_both(recipe)
    assert list(generator.attention) == [str(size)] and list(discriminator.attention) == [str(size)]
    seen = []
    generator.attention[str(size)].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    discriminator.attention[str(size)].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    logits = discriminator(generator(torch.randn(2, 8)))
    assert [s[-1] for s in seen] == [size, size] and logits.shape == (2,)


def test_official_128_layout_widths():
    recipe = resolve_recipe(
        {"name": "t", "data": {"resolution": 128}, "model": {"attention_layer": [32]}},
        origin="test",
    )
    generator, discriminator = build_networks(recipe, 0)
    assert [b.conv1.out_channels for b in generator.blocks] == [1024, 512, 256, 128, 64]
    assert [b.conv1.out_channels for b in discriminator.blocks] == [64, 128, 256, 512, 1024, 1024]
    assert generator.attention["32"].f.in_channels == 256  # G 256 ch at 32x32
    assert discriminator.attention["32"].f.in_channels == 128  # D 128 ch at 32x32


def conv_parameters(inputs: int, outputs: int, kernel: int) -> int:
    return inputs * outputs * kernel * kernel + outputs  # weight and bias


def attention_parameters(channels: int) -> int:
    return 4 * channels * (channels // 8) + 1  # f, g, h to C/8, v back, gamma


def test_paper_128_parameter_counts_follow_from_the_layer_shapes():
    """The class-conditional 128x128 nets, counted from the official layout by hand."""
    recipe = resolve_recipe(
        {
            "name": "t",
            "data": {"resolution": 128},
            "model": {
                "attention_layer": [32],
                "conditional": True,
                "norm": {"features": "conditional_batchnorm"},
            },
        },
        origin="test",
    )
    generator, discriminator = build_networks(recipe, 1000)
    classes = 1000
    g_expected = 128 * 4 * 4 * 1024 + 4 * 4 * 1024  # linear z -> 4x4x1024
    for i, o in [(1024, 1024), (1024, 512), (512, 256), (256, 128), (128, 64)]:
        g_expected += conv_parameters(i, o, 3) + conv_parameters(o, o, 3) + conv_parameters(i, o, 1)
        g_expected += 2 * classes * (i + o)  # CBN gain and bias tables of both norms
    g_expected += 2 * 64 + conv_parameters(64, 3, 3) + attention_parameters(256)
    d_expected = attention_parameters(128) + (1024 + 1) + classes * 1024  # head + projection
    widths = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1024), (1024, 1024)]
    for index, (i, o) in enumerate(widths):
        d_expected += conv_parameters(i, o, 3) + conv_parameters(o, o, 3)
        if index < 5:  # the last block neither resamples nor changes width: no shortcut conv
            d_expected += conv_parameters(i, o, 1)
    assert count_parameters(generator) == g_expected
    assert count_parameters(discriminator) == d_expected


def test_ema_follows_its_equation():
    from sagan_cli.train.ema import EMA

    source = torch.nn.Linear(2, 1)
    ema = EMA(source, decay=0.9, start=1)
    with torch.no_grad():
        source.weight.fill_(1.0)
    ema.update(source, step=1)  # until start: a copy
    assert torch.equal(ema.model.weight, source.weight)
    with torch.no_grad():
        source.weight.fill_(3.0)
    ema.update(source, step=2)  # 0.9 * 1 + 0.1 * 3
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 1.2))
    ema.update(source, step=3)  # 0.9 * 1.2 + 0.1 * 3
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 1.38))
    no_average = EMA(source, decay=0.0, start=0)
    no_average.update(source, step=5)
    assert torch.equal(no_average.model.weight, source.weight)


def test_class_conditioning_reaches_both_networks():
    recipe = tiny_recipe(32, conditional=True, norm={"features": "conditional_batchnorm"})
    generator, discriminator = build_networks(recipe, 3)
    generator.eval()
    with torch.no_grad():
        for module in generator.modules():
            if hasattr(module, "gain"):
                module.gain.weight.normal_()
        z = torch.randn(1, 8).repeat(3, 1)
        images = generator(z, torch.arange(3))
        assert not torch.allclose(images[0], images[1])
        same = images[:1].repeat(3, 1, 1, 1)
        logits = discriminator(same, torch.arange(3))
        assert not torch.allclose(logits[0], logits[1])
    with pytest.raises(ValueError, match="labels"):
        discriminator(same)


def test_spectral_norm_makes_every_largest_singular_value_one():
    recipe = tiny_recipe(32, attention_layer=[16], g_channels=4, d_channels=4)
    generator, discriminator = build_networks(recipe, 0)
    for _ in range(30):  # one power iteration per training forward, as in training
        discriminator(generator(torch.randn(4, 8)))
    checked = 0
    for net in (generator, discriminator):
        for name, module in net.named_modules():
            if not hasattr(module, "parametrizations"):
                continue
            weight = module.weight.detach()
            sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
            assert abs(float(sigma) - 1.0) < 0.02, (name, float(sigma))
            checked += 1
    # every conv and linear of both nets, the attention's four 1x1 convs included
    assert checked == sum(
        isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
        for n in (generator, discriminator)
        for m in n.modules()
    )


def test_no_weight_norm_leaves_layers_plain():
    recipe = tiny_recipe(32, norm={"generator": "none", "discriminator": "none"})
    generator, discriminator = build_networks(recipe, 0)
    assert not any(
        hasattr(m, "parametrizations") for n in (generator, discriminator) for m in n.modules()
    )


# ---- losses on hand-computed logits ---------------------------------------------------------------

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 1.5])


def test_hinge_loss_values():
    # D: mean(relu(1 - [2, .5, -1])) + mean(relu(1 + [-2, 0, 1.5])) = (0 + .5 + 2)/3 + (0 + 1 + 2.5)/3
    assert float(Hinge().d_loss(REAL, FAKE)) == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert float(Hinge().g_loss(FAKE)) == pytest.approx(0.5 / 3)  # -mean([-2, 0, 1.5])


def test_nonsaturating_loss_values():
    softplus = lambda v: torch.log1p(torch.exp(torch.tensor(v))).item()  # noqa: E731
    d = (softplus(-2.0) + softplus(-0.5) + softplus(1.0)) / 3 + (
        softplus(-2.0) + softplus(0.0) + softplus(1.5)
    ) / 3
    g = (softplus(2.0) + softplus(0.0) + softplus(-1.5)) / 3
    assert float(NonSaturating().d_loss(REAL, FAKE)) == pytest.approx(d)
    assert float(NonSaturating().g_loss(FAKE)) == pytest.approx(g)


def test_least_squares_loss_values():
    d = 0.5 * ((1.0 + 0.25 + 4.0) / 3 + (4.0 + 0.0 + 2.25) / 3)
    assert float(LeastSquares().d_loss(REAL, FAKE)) == pytest.approx(d)
    assert float(LeastSquares().g_loss(FAKE)) == pytest.approx(0.5 * (9.0 + 1.0 + 0.25) / 3)


def test_wasserstein_loss_and_gradient_penalty():
    loss = WassersteinGP(gp_weight=10.0)
    assert float(loss.d_loss(REAL, FAKE)) == pytest.approx((-0.5 / 3) - (1.5 / 3))
    assert float(loss.g_loss(FAKE)) == pytest.approx(0.5 / 3)
    w = torch.full((1, 2, 2, 2), 0.25)  # ||w|| = sqrt(8 * 0.0625) = 0.7071
    critic = lambda x: (x * w).flatten(1).sum(dim=1)  # noqa: E731 - gradient w everywhere
    real, fake = torch.randn(4, 1, 2, 2).repeat(1, 2, 1, 1), torch.randn(4, 2, 2, 2)
    penalty = loss.penalty(critic, real, fake)
    assert float(penalty) == pytest.approx(10.0 * (0.5**0.5 - 1.0) ** 2, rel=1e-5)
    assert Hinge().penalty(critic, real, fake) is None
