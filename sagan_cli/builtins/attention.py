"""Built-in attention plugins: ``sagan``, ``sagan_pooled``, ``residual``, ``none``.

The blocks themselves live in ``sagan_cli.model.attention``; factories import it
when called, so registering the plugins costs no torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from sagan_cli.api import AttentionPlugin, LayerContext, NoParams, PluginParams, Register, hookimpl

if TYPE_CHECKING:
    from torch import nn


class SaganParams(PluginParams):
    reduction: int = Field(8, ge=1, description="f, g, h project C -> C/reduction")


class PooledParams(PluginParams):
    key_reduction: int = Field(8, ge=1, description="f, g project C -> C/key_reduction")
    value_reduction: int = Field(2, ge=1, description="h projects C -> C/value_reduction")
    pool: int = Field(2, ge=1, description="max-pool kernel and stride on keys and values")


class ResidualParams(PluginParams):
    kernel_size: int = Field(3, ge=1, description="odd conv kernel size")
    hidden_reduction: int = Field(
        1,
        ge=1,
        description="inner width C/hidden_reduction (raise it to match a block's parameters)",
    )

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the feature-map size, got {size}")
        return size


def _channels_after(channels: int, reduction: int) -> int:
    return max(1, channels // reduction)


def build_sagan(params: SaganParams, context: LayerContext) -> nn.Module:
    from sagan_cli.model.attention import SelfAttention2d

    inner = _channels_after(context.channels, params.reduction)
    return SelfAttention2d(context.channels, inner, inner, pool=1, weight_norm=context.weight_norm)


def build_pooled(params: PooledParams, context: LayerContext) -> nn.Module:
    from sagan_cli.model.attention import SelfAttention2d

    return SelfAttention2d(
        context.channels,
        _channels_after(context.channels, params.key_reduction),
        _channels_after(context.channels, params.value_reduction),
        pool=params.pool,
        weight_norm=context.weight_norm,
    )


def build_residual(params: ResidualParams, context: LayerContext) -> nn.Module:
    from sagan_cli.model.attention import ResidualBlock2d

    hidden = _channels_after(context.channels, params.hidden_reduction)
    return ResidualBlock2d(context.channels, hidden, params.kernel_size, context.weight_norm)


def build_none(params: NoParams, context: LayerContext) -> nn.Module:
    from torch import nn

    return nn.Identity()


PLUGINS = (
    AttentionPlugin(
        api_version=1,
        name="sagan",
        summary="Self-attention as in the paper's equations (f, g, h to C/8, v back to C)",
        params=SaganParams,
        factory=build_sagan,
        identity_at_init=True,
    ),
    AttentionPlugin(
        api_version=1,
        name="sagan_pooled",
        summary="Official-code self-attention: values C/2, 2x2 max-pooled keys and values",
        params=PooledParams,
        factory=build_pooled,
        identity_at_init=True,
    ),
    AttentionPlugin(
        api_version=1,
        name="residual",
        summary="Plain residual conv block at the same place (the paper's Table 1 baseline)",
        params=ResidualParams,
        factory=build_residual,
    ),
    AttentionPlugin(
        api_version=1,
        name="none",
        summary="No block: the feature map passes through unchanged",
        factory=build_none,
        identity_at_init=True,
    ),
)


@hookimpl
def sagan_register_attention(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
