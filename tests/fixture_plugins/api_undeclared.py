"""Two plugins whose descriptors do not declare api_version (tests only)."""

from torch import nn

from sagan_cli.api import AttentionPlugin, hookimpl


@hookimpl
def sagan_register_attention(register):
    for name in ("quiet_one", "quiet_two"):
        register(AttentionPlugin(name=name, summary="t", factory=lambda p, c: nn.Identity()))
