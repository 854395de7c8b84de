"""A plugin whose imports were updated to API v1 but whose factories still take only
``params`` (API 0.1), three of them (tests only)."""

from torch import nn

from sagan_cli.api import AttentionPlugin, hookimpl


def build(params):
    return nn.Identity()


@hookimpl
def sagan_register_attention(register):
    for name in ("old_a", "old_b", "old_c"):
        register(AttentionPlugin(name=name, summary="API 0.1 factory", factory=build))
