"""Extra attention variants for sagan-cli, registered through the ``sagan_cli`` entry point.

* ``multihead``: SAGAN's block with several heads (scaled dot-product per head).
* ``linear``: linear attention (Katharopoulos et al., 2020), O(N) in positions.

This module only registers: it imports ``sagan_cli.api`` and pydantic, so
``sagan plugins`` stays fast. The torch modules live in ``modules.py`` and are
imported when a factory builds one.
"""

from __future__ import annotations

from pydantic import Field

from sagan_cli.api import AttentionPlugin, LayerContext, PluginParams, Register, hookimpl

__version__ = "0.1.0"


class MultiHeadParams(PluginParams):
    heads: int = Field(4, ge=1, description="attention heads")
    reduction: int = Field(2, ge=1, description="queries, keys and values use C/reduction channels")


class LinearParams(PluginParams):
    reduction: int = Field(8, ge=1, description="queries and keys use C/reduction channels")


def build_multihead(params: MultiHeadParams, context: LayerContext):
    from sagan_extra_attention.modules import MultiHeadSelfAttention2d, inner_channels

    inner = inner_channels(context.channels, params.reduction, params.heads)
    return MultiHeadSelfAttention2d(context.channels, params.heads, inner, context.weight_norm)


def build_linear(params: LinearParams, context: LayerContext):
    from sagan_extra_attention.modules import LinearSelfAttention2d

    inner = max(1, context.channels // params.reduction)
    return LinearSelfAttention2d(context.channels, inner, context.weight_norm)


@hookimpl
def sagan_register_attention(register: Register) -> None:
    register(
        AttentionPlugin(
            name="multihead",
            summary="SAGAN block with several scaled dot-product heads",
            params=MultiHeadParams,
            factory=build_multihead,
            identity_at_init=True,
        )
    )
    register(
        AttentionPlugin(
            name="linear",
            summary="Linear attention (elu+1 features), O(N) time and memory",
            params=LinearParams,
            factory=build_linear,
            identity_at_init=True,
        )
    )
