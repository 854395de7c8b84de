"""A plugin written for API 0.1: it imports its descriptors from sagan_cli.plugins (tests only)."""

from sagan_cli.plugins import AttentionPlugin, hookimpl  # noqa: F401 - the 0.1 spelling


@hookimpl
def sagan_register_attention(register):
    register(AttentionPlugin(name="old_style", summary="API 0.1", factory=lambda params: None))
