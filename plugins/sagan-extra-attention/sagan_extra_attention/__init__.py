"""Extra attention variants for sagan-cli, registered through the ``sagan_cli`` entry point.

* ``multihead``: SAGAN's block with several heads (scaled dot-product per head).
* ``linear``: linear attention (Katharopoulos et al., 2020), O(N) in positions.
* ``oracle``: a positive control, not a model: every position attends to exactly the
  position the data declares as its partner (``DataSource.partners``: the twin glyph
  of ``glyphs``, the mirror image of ``shapes``), with SAGAN's learnable gamma. An
  ablation that cannot show it ``better`` than no attention cannot show anything.

This module only registers: it imports ``sagan_cli.api`` and pydantic, so
``sagan plugins`` stays fast. The torch modules live in ``modules.py`` and are
imported when a factory builds one.
"""

from __future__ import annotations

from pydantic import Field

from sagan_cli.api import (
    AttentionPlugin,
    LayerContext,
    PluginError,
    PluginParams,
    Register,
    hookimpl,
)

__version__ = "0.2.0"


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


class OracleParams(PluginParams):
    reduction: int = Field(
        1,
        ge=1,
        description="values use C/reduction channels (1: all, so the twin can be copied whole)",
    )


def build_oracle(params: OracleParams, context: LayerContext):
    if context.partners is None:
        raise PluginError(
            "the oracle attends to the long-range dependency the data declares, and this data "
            "source declares none: its DataSource.partners(size) returns None. Use data that "
            'declares one (data.source = "glyphs" or "shapes") or give your data source a '
            "partners(size) method returning, for every position of a size x size map, the "
            "position it must agree with"
        )
    from sagan_extra_attention.modules import OracleAttention2d

    inner = max(1, context.channels // params.reduction)
    return OracleAttention2d(context.channels, inner, context.partners, context.weight_norm)


@hookimpl
def sagan_register_attention(register: Register) -> None:
    register(
        AttentionPlugin(
            api_version=1,
            name="multihead",
            summary="SAGAN block with several scaled dot-product heads",
            params=MultiHeadParams,
            factory=build_multihead,
            identity_at_init=True,
        )
    )
    register(
        AttentionPlugin(
            api_version=1,
            name="linear",
            summary="Linear attention (elu+1 features), O(N) time and memory",
            params=LinearParams,
            factory=build_linear,
            identity_at_init=True,
        )
    )
    register(
        AttentionPlugin(
            api_version=1,
            name="oracle",
            summary="Positive control: attends to the data's declared partner position",
            params=OracleParams,
            factory=build_oracle,
            identity_at_init=True,
        )
    )
