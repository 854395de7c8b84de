"""A plugin that says it was written for plugin API 0 (tests only)."""

from sagan_cli.api import AttentionPlugin, hookimpl


@hookimpl
def sagan_register_attention(register):
    register(
        AttentionPlugin(name="from_the_past", summary="t", factory=lambda p, c: None, api_version=0)
    )
