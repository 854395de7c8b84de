"""A plugin that says it was written for a plugin API this sagan-cli does not speak (tests only)."""

from sagan_cli.api import AttentionPlugin, hookimpl


@hookimpl
def sagan_register_attention(register):
    register(
        AttentionPlugin(
            name="from_the_future", summary="t", factory=lambda p, c: None, api_version=2
        )
    )
