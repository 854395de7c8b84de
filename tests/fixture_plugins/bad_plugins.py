"""Attention plugins that break the contract in every way a third party might (tests only)."""

from torch import nn

from sagan_cli.api import AttentionPlugin, PluginError, hookimpl


class WrongChannels(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels + 1, 1)

    def forward(self, x):
        return self.conv(x)


class NanOutput(nn.Module):
    def forward(self, x):
        return x * float("nan")


class BreaksInD8(nn.Module):
    def __init__(self, context):
        super().__init__()
        self.context = context

    def forward(self, x):
        if self.context.network == "d" and self.context.feature_size == 8:
            raise RuntimeError("shape mismatch in my einsum")
        return x


def raising(params, context):
    raise ValueError("heads must divide channels")


def deliberate(params, context):
    raise PluginError("needs at least 16 channels")


BAD = {
    "bad_raises": raising,
    "bad_none": lambda params, context: None,
    "bad_channels": lambda params, context: WrongChannels(context.channels),
    "bad_nan": lambda params, context: NanOutput(),
    "bad_in_d8": lambda params, context: BreaksInD8(context),
    "bad_deliberate": deliberate,
    "bad_not_identity": lambda params, context: nn.Conv2d(context.channels, context.channels, 1),
}


@hookimpl
def sagan_register_attention(register):
    for name, factory in BAD.items():
        register(
            AttentionPlugin(
                api_version=1,
                name=name,
                summary="breaks the contract (tests only)",
                factory=factory,
                identity_at_init=name == "bad_not_identity",
            )
        )
