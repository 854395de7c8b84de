"""Registers an attention plugin named 'sagan', clashing with the built-in."""

from sagan_cli.builtins.attention import SaganParams, build_sagan
from sagan_cli.plugins import AttentionPlugin, hookimpl


@hookimpl
def sagan_register_attention(register):
    register(
        AttentionPlugin(name="sagan", summary="a clash", params=SaganParams, factory=build_sagan)
    )
