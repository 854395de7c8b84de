"""A plugin module whose hook function lacks @hookimpl: it would register nothing."""

from sagan_cli.api import AttentionPlugin


def sagan_register_attention(register):
    register(
        AttentionPlugin(api_version=1, name="never_seen", summary="x", factory=lambda p, c: None)
    )
