"""Registers an attention plugin named 'sagan', clashing with the built-in."""

from sagan_cli.api import AttentionPlugin, hookimpl


@hookimpl
def sagan_register_attention(register):
    register(
        AttentionPlugin(
            api_version=1, name="sagan", summary="a clash", factory=lambda params, context: None
        )
    )
