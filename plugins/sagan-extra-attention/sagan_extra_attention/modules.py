"""The attention blocks: (B, C, H, W) -> same shape, residual gain ``gamma`` starting at 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sagan_cli.api import WeightNorm


def inner_channels(channels: int, reduction: int, heads: int) -> int:
    """C/reduction rounded down to a multiple of ``heads`` (at least one channel per head)."""
    return max(heads, channels // reduction // heads * heads)


class MultiHeadSelfAttention2d(nn.Module):
    def __init__(self, channels: int, heads: int, inner: int, weight_norm: WeightNorm) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = weight_norm(nn.Conv2d(channels, 3 * inner, 1, bias=False))
        self.out = weight_norm(nn.Conv2d(inner, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, _, height, width = x.shape
        # (B, 3*I, H, W) -> three (B, heads, N, I/heads); fused SDPA kernels need the
        # last dim contiguous, else PyTorch falls back to materialising N x N maps.
        q, k, v = (
            t.reshape(batch, self.heads, -1, height * width).transpose(2, 3).contiguous()
            for t in self.qkv(x).chunk(3, dim=1)
        )
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        q, k, v = self._heads(x)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(2, 3).reshape(batch, -1, height, width)
        return x + self.gamma * self.out(attended)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The heads' maps averaged: (B, N, N), rows summing to 1 (sagan_cli.api.AttentionMaps)."""
        q, k, _ = self._heads(x)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        return scores.softmax(dim=-1).mean(dim=1)

    def key_grid(self, height: int, width: int) -> tuple[int, int]:
        return height, width


class LinearSelfAttention2d(nn.Module):
    """phi(q) (phi(k)^T v) / (phi(q) sum phi(k)) with phi = elu + 1: never forms an N x N map."""

    def __init__(self, channels: int, inner: int, weight_norm: WeightNorm) -> None:
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


class OracleAttention2d(nn.Module):
    """x + gamma * out(value(x) moved from each position's partner): attention whose map is the
    data's known dependency (a permutation, one-hot rows) instead of learnt."""

    def __init__(
        self, channels: int, inner: int, partners: torch.Tensor, weight_norm: WeightNorm
    ) -> None:
        super().__init__()
        self.value = weight_norm(nn.Conv2d(channels, inner, 1, bias=False))
        self.out = weight_norm(nn.Conv2d(inner, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))
        self.register_buffer("partners", partners.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        if height * width != len(self.partners):
            raise ValueError(
                f"built for {len(self.partners)} positions, called on a {height}x{width} map"
            )
        values = self.value(x).flatten(2)  # (B, I, N)
        moved = values.index_select(2, self.partners).reshape(batch, -1, height, width)
        return x + self.gamma * self.out(moved)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, N): row j is one-hot at j's partner (sagan_cli.api.AttentionMaps)."""
        positions = len(self.partners)
        beta = F.one_hot(self.partners, positions).to(x.dtype)
        return beta.expand(x.shape[0], positions, positions)

    def key_grid(self, height: int, width: int) -> tuple[int, int]:
        return height, width
