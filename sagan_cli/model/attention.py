"""SAGAN self-attention (paper equations and the official pooled variant) and its baselines.

Paper (arXiv 1805.08318, Sec. 3), for feature map x with N = H*W positions:

    f(x) = W_f x,  g(x) = W_g x,  h(x) = W_h x          (1x1 convs, C -> C/8)
    s_ij = f(x_i)^T g(x_j),  beta_{j,i} = softmax_i(s_ij) (row j sums to 1 over i)
    o_j  = v( sum_i beta_{j,i} h(x_i) )                  (v: 1x1 conv back to C)
    y    = gamma * o + x,  gamma initialised to 0

So g gives the queries, f the keys and h the values; there is no 1/sqrt(d)
temperature. The official code keeps this but projects values to C/2 and
max-pools keys and values 2x2 (the map is N x N/4).

``forward`` is the training path: fused ``scaled_dot_product_attention``,
never materialising the N x M map. ``forward_explicit`` computes the equations
literally and returns beta: the test oracle, the benchmark baseline and the
attention-map visualisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sagan_cli.api import WeightNorm


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


# N x M up to which two plain bmms beat the fused kernel on CPU (maps up to 16x16, where the
# kernel's set-up dominates and the map is only 256 KB per image); larger maps are never kept.
CPU_BMM_MAX_SCORES = 256 * 256


def fused_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(query @ key^T) @ value for (B, N, d_k), (B, M, d_k), (B, M, d_v) -> (B, N, d_v)."""
    d_key, d_value = query.shape[-1], value.shape[-1]
    if query.device.type == "cpu" and query.shape[1] * key.shape[1] <= CPU_BMM_MAX_SCORES:
        return torch.bmm(torch.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1), value)
    if query.device.type == "cpu" and d_key < d_value:
        # The CPU fused kernel needs equal head dims (else PyTorch falls back to the
        # quadratic-memory maths path). Zero-padding queries and keys leaves every
        # dot product, hence the softmax, unchanged. CUDA's memory-efficient kernel
        # takes unequal dims as they are.
        query = F.pad(query, (0, d_value - d_key))
        key = F.pad(key, (0, d_value - d_key))
    # Fused kernels need unit stride in the last dim, else SDPA silently takes the quadratic
    # path; for channels_last feature maps these are no-ops.
    out = F.scaled_dot_product_attention(
        query.contiguous().unsqueeze(1),
        key.contiguous().unsqueeze(1),
        value.contiguous().unsqueeze(1),
        scale=1.0,
    )
    return out.squeeze(1)


class SelfAttention2d(nn.Module):
    """y = x + gamma * v(attention(g(x), f(x), h(x))), optionally max-pooling keys and values."""

    def __init__(
        self,
        channels: int,
        key_channels: int,
        value_channels: int,
        pool: int,
        weight_norm: WeightNorm,
    ) -> None:
        super().__init__()
        self.f = weight_norm(conv1x1(channels, key_channels))  # keys
        self.g = weight_norm(conv1x1(channels, key_channels))  # queries
        self.h = weight_norm(conv1x1(channels, value_channels))  # values
        self.v = weight_norm(conv1x1(value_channels, channels))  # back to C
        self.pool = pool
        self.gamma = nn.Parameter(torch.zeros(()))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, N, C_k), keys (B, M, C_k), values (B, M, C_v); M = N / pool^2 (views of the
        maps: a kernel that needs them contiguous copies them)."""
        keys, values = self.f(x), self.h(x)
        if self.pool > 1:
            keys = F.max_pool2d(keys, self.pool)
            values = F.max_pool2d(values, self.pool)
        return (
            self.g(x).flatten(2).transpose(1, 2),
            keys.flatten(2).transpose(1, 2),
            values.flatten(2).transpose(1, 2),
        )

    def combine(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        # (B, N, C_v) -> (B, C_v, H, W) -> v -> (B, C, H, W)
        batch, _, height, width = x.shape
        attended = attended.transpose(1, 2).reshape(batch, -1, height, width)
        return x + self.gamma * self.v(attended)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.project(x)
        return self.combine(x, fused_attention(query, key, value))

    def forward_explicit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's equations step by step; returns (y, beta) with beta (B, N, M)."""
        query, key, value = self.project(x)
        scores = torch.bmm(query, key.transpose(1, 2))  # s[j, i] = g(x_j) . f(x_i)
        beta = torch.softmax(scores, dim=-1)  # normalise over attended positions i
        return self.combine(x, torch.bmm(beta, value)), beta

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """beta (B, N, M): row j is where query position j attends (``sagan_cli.api.AttentionMaps``)."""
        return self.forward_explicit(x)[1]

    def key_grid(self, height: int, width: int) -> tuple[int, int]:
        """The grid the M attended positions lie on: the map itself, or its pooled cells."""
        return height // self.pool, width // self.pool


class ResidualBlock2d(nn.Module):
    """The paper's Table 1 baseline: a plain residual block where attention would go."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, weight_norm: WeightNorm):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = weight_norm(nn.Conv2d(channels, hidden, kernel_size, padding=padding))
        self.conv2 = weight_norm(nn.Conv2d(hidden, channels, kernel_size, padding=padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))
