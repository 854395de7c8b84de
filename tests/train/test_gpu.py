"""CUDA-only checks (skipped without a GPU): the fused path's speed and memory, bf16 training."""

from __future__ import annotations

import pytest
import torch

from sagan_cli.api import LayerContext
from sagan_cli.builtins.attention import PooledParams, SaganParams, build_pooled, build_sagan
from sagan_cli.device import select_device
from sagan_cli.plugins import get_registry
from sagan_cli.recipe import load_recipe
from sagan_cli.results import run_dir_for
from sagan_cli.train.run import train_run

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda") if torch.cuda.is_available() else None


def module(variant: str, channels: int = 256):
    torch.manual_seed(0)
    build, params = (
        (build_sagan, SaganParams()) if variant == "sagan" else (build_pooled, PooledParams())
    )
    block = build(params, LayerContext("g", 32, 0, channels, 16, lambda layer: layer)).to(CUDA)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    return block


@pytest.fixture
def no_tf32():
    """Exact fp32 matmuls for this test only; the setting is global, so it is restored."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("variant", ["sagan", "sagan_pooled"])
def test_fused_equals_explicit_on_cuda(variant, no_tf32):
    block = module(variant, 64)
    x = torch.randn(2, 64, 16, 16, device=CUDA)
    torch.testing.assert_close(block(x), block.forward_explicit(x)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["sagan", "sagan_pooled"])
def test_fused_peak_memory_grows_linearly_with_positions(variant):
    block = module(variant)

    def peak(size: int) -> int:
        x = torch.randn(8, 256, size, size, device=CUDA, requires_grad=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = block(x)
        out.float().square().mean().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    small, large = peak(32), peak(64)  # 4x the positions
    assert large / small < 6, (small, large)  # quadratic would be ~16x


def test_bf16_training_runs_on_cuda(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe, ["train.deterministic=false"])
    run = run_dir_for(tmp_path, recipe.name, recipe)
    result = train_run(recipe, run, select_device("cuda"), get_registry())
    assert result.status == "done"
    assert run.read_status()["precision"] == "bf16"


@pytest.mark.parametrize("variant", ["sagan", "sagan_pooled"])
def test_wgan_gp_trains_with_attention_on_cuda(tiny_recipe, tmp_path, variant):
    """The gradient penalty differentiates through D's attention: second derivatives on CUDA."""
    recipe = load_recipe(
        tiny_recipe,
        [
            "loss.name=wasserstein",
            f"model.attention.variant={variant}",
            "train.deterministic=false",
        ],
    )
    run = run_dir_for(tmp_path, recipe.name, recipe)
    assert train_run(recipe, run, select_device("cuda"), get_registry()).status == "done"
