"""An attention block whose first training iteration spends a minute in C code that takes no
signal (tests only): where a second Ctrl-C must still end the process within a second."""

import hashlib
from pathlib import Path

from torch import nn

from sagan_cli.api import AttentionPlugin, hookimpl


class SlowOnce(nn.Module):
    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.slept = False

    def forward(self, x):
        if self.training and not self.slept:
            self.slept = True
            Path(self.marker).write_text("inside the long iteration")
            hashlib.pbkdf2_hmac("sha256", b"x", b"y", 300_000_000)  # about a minute, GIL released
        return x


@hookimpl
def sagan_register_attention(register):
    import os

    register(
        AttentionPlugin(
            api_version=1,
            name="slow_iteration",
            summary="t",
            factory=lambda p, c: SlowOnce(os.environ["SLOW_ITERATION_MARKER"]),
        )
    )
