"""Extra attention variants for sagan-cli, registered through the ``sagan_cli`` entry point.

* ``multihead``: SAGAN's block with several heads (scaled dot-product per head).
* ``linear``: linear attention (Katharopoulos et al., 2020), O(N) in positions.

Both follow the attention contract: ``factory(channels, params, weight_norm)``
returns a module mapping (B, C, H, W) to the same shape, with a residual gain
``gamma`` initialised to 0 as in SAGAN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sagan_cli.plugins import AttentionPlugin, PluginParams, hookimpl

__version__ = "0.1.0"


class MultiHeadParams(PluginParams):
    heads: int = Field(4, ge=1, description="attention heads")
    reduction: int = Field(2, ge=1, description="queries, keys and values use C/reduction channels")


class LinearParams(PluginParams):
    reduction: int = Field(8, ge=1, description="queries and keys use C/reduction channels")


def _inner_channels(channels: int, reduction: int, heads: int) -> int:
    """C/reduction rounded down to a multiple of ``heads`` (at least one channel per head)."""
    return max(heads, channels // reduction // heads * heads)


class MultiHeadSelfAttention2d(nn.Module):
    def __init__(self, channels: int, heads: int, inner: int, weight_norm) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = weight_norm(nn.Conv2d(channels, 3 * inner, 1, bias=False))
        self.out = weight_norm(nn.Conv2d(inner, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # (B, 3*I, H, W) -> three (B, heads, N, I/heads); fused SDPA kernels need the
        # last dim contiguous, else PyTorch falls back to materialising N x N maps.
        q, k, v = (
            t.reshape(batch, self.heads, -1, height * width).transpose(2, 3).contiguous()
            for t in self.qkv(x).chunk(3, dim=1)
        )
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(2, 3).reshape(batch, -1, height, width)
        return x + self.gamma * self.out(attended)


class LinearSelfAttention2d(nn.Module):
    """phi(q) (phi(k)^T v) / (phi(q) sum phi(k)) with phi = elu + 1: never forms an N x N map."""

    def __init__(self, channels: int, inner: int, weight_norm) -> None:
        super().__init__()
        self.query = weight_norm(nn.Conv2d(channels, inner, 1, bias=False))
        self.key = weight_norm(nn.Conv2d(channels, inner, 1, bias=False))
        self.value = weight_norm(nn.Conv2d(channels, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = F.elu(self.query(x).flatten(2)) + 1  # (B, I, N)
        k = F.elu(self.key(x).flatten(2)) + 1  # (B, I, N)
        v = self.value(x).flatten(2)  # (B, C, N)
        context = torch.einsum("bin,bcn->bic", k, v)  # (B, I, C)
        normaliser = torch.einsum("bin,bi->bn", q, k.sum(dim=2)).clamp(min=1e-6)
        out = torch.einsum("bin,bic->bcn", q, context) / normaliser[:, None]
        return x + self.gamma * out.reshape_as(x)


def build_multihead(channels: int, params: MultiHeadParams, weight_norm) -> nn.Module:
    inner = _inner_channels(channels, params.reduction, params.heads)
    return MultiHeadSelfAttention2d(channels, params.heads, inner, weight_norm)


def build_linear(channels: int, params: LinearParams, weight_norm) -> nn.Module:
    return LinearSelfAttention2d(channels, max(1, channels // params.reduction), weight_norm)


@hookimpl
def sagan_register_attention(register) -> None:
    register(
        AttentionPlugin(
            name="multihead",
            summary="SAGAN block with several scaled dot-product heads",
            params=MultiHeadParams,
            factory=build_multihead,
        )
    )
    register(
        AttentionPlugin(
            name="linear",
            summary="Linear attention (elu+1 features), O(N) time and memory",
            params=LinearParams,
            factory=build_linear,
        )
    )
