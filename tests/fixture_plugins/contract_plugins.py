"""Attention plugins that probe the contract's edges, as third-party blocks meet them (tests only).

* ``sized``: learned per-position gains, a table of H x W = the context's feature size
  (timm's BottleneckAttn and Halo have such tables): fed another size, it fails.
* ``conv3d_block``: a block with a 5-D Conv3d weight (timm's LambdaLayer has one).
* ``layout_breaker``: ``.view`` on its input, which a channels_last tensor cannot take.
* ``small_only``: declines feature maps above ``max_size`` (``PlacementUnsupported``).
* ``gamma_param``/``gamma_liar``: ``identity_at_init`` computed from the parameters
  (``gamma_liar`` claims it whatever gamma starts at).
* ``fails_in_training``: fine in the eval-mode dry run, raises in the first training step.
"""

import torch
from pydantic import Field
from torch import nn

from sagan_cli.api import AttentionPlugin, PlacementUnsupported, PluginParams, hookimpl


class Sized(nn.Module):
    def __init__(self, context):
        super().__init__()
        self.size = context.feature_size
        self.table = nn.Parameter(torch.ones(1, 1, self.size, self.size))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        assert x.shape[-2:] == (self.size, self.size), "the position table fits one size only"
        return x + self.gamma * x * self.table


class Conv3dBlock(nn.Module):
    def __init__(self, context):
        super().__init__()
        self.conv = context.weight_norm(nn.Conv3d(1, 1, (1, 3, 3), padding=(0, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.gamma * self.conv(x.unsqueeze(1)).squeeze(1)


class LayoutBreaker(nn.Module):
    def __init__(self, context):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        flat = x.view(x.shape[0], -1)  # fails on channels_last input: C and H cannot merge
        return x + self.gamma * flat.softmax(-1).view(x.shape)


class Gain(nn.Module):
    def __init__(self, gamma):
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))

    def forward(self, x):
        return x + self.gamma * torch.tanh(x)


class FailsInTraining(nn.Module):
    def forward(self, x):
        if self.training:
            raise RuntimeError(
                "einsum(): subscript b has size 4 for operand 1 which does not broadcast"
            )
        return x


class SmallParams(PluginParams):
    max_size: int = Field(8, ge=1, description="largest feature map it builds for")


class GammaParams(PluginParams):
    gamma_init: float = 0.0


def build_small(params, context):
    if context.feature_size > params.max_size:
        raise PlacementUnsupported(
            f"N x N position logits: not above {params.max_size}x{params.max_size}"
        )
    return Sized(context)


@hookimpl
def sagan_register_attention(register):
    register(
        AttentionPlugin(
            api_version=1,
            name="sized",
            summary="t",
            factory=lambda p, c: Sized(c),
            identity_at_init=True,
        )
    )
    register(
        AttentionPlugin(
            api_version=1,
            name="conv3d_block",
            summary="t",
            factory=lambda p, c: Conv3dBlock(c),
            identity_at_init=True,
        )
    )
    register(
        AttentionPlugin(
            api_version=1, name="layout_breaker", summary="t", factory=lambda p, c: LayoutBreaker(c)
        )
    )
    register(
        AttentionPlugin(
            api_version=1, name="small_only", summary="t", params=SmallParams, factory=build_small
        )
    )
    register(
        AttentionPlugin(
            api_version=1,
            name="gamma_param",
            summary="t",
            params=GammaParams,
            factory=lambda p, c: Gain(p.gamma_init),
            identity_at_init=lambda p: p.gamma_init == 0,
        )
    )
    register(
        AttentionPlugin(
            api_version=1,
            name="gamma_liar",
            summary="t",
            params=GammaParams,
            factory=lambda p, c: Gain(p.gamma_init),
            identity_at_init=lambda p: True,
        )
    )
    register(
        AttentionPlugin(
            api_version=1,
            name="fails_in_training",
            summary="t",
            factory=lambda p, c: FailsInTraining(),
        )
    )
    register(
        AttentionPlugin(
            api_version=1,
            name="bf16_breaker",
            summary="t",
            factory=lambda p, c: BreaksInBf16(c.channels),
        )
    )


class BreaksInBf16(nn.Module):
    """Fine in fp32, broken under bf16 autocast (a plugin author's bug the fp32 check missed)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        h = self.conv(x)
        if h.dtype == torch.bfloat16:
            raise RuntimeError("this block assumes float32 features")
        return x + 0 * h
