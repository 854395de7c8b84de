"""An attention block whose every query attends to exactly its mirror position (tests only).

beta is one-hot: query (row r, column c) of an S x S map attends to (r, S - 1 - c), so its
statistics are known by hand: on shapes (partners = mirror images) partner share 1, entropy 0, and a mean distance equal to the
mean of |2c + 1 - S| / S over the columns.
"""

import torch
from torch import nn

from sagan_cli.api import AttentionPlugin, hookimpl


class MirrorAttention(nn.Module):
    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(()))
        self.scale = nn.Parameter(torch.ones(channels))  # something to train

    def key_grid(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        index = torch.arange(height * width, device=x.device)
        mirror = (index // width) * width + (width - 1 - index % width)
        beta = torch.zeros(height * width, height * width, device=x.device)
        beta[index, mirror] = 1.0
        return beta.expand(batch, -1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.scale[None, :, None, None] * x.flip(-1)


@hookimpl
def sagan_register_attention(register):
    register(
        AttentionPlugin(
            api_version=1,
            name="mirror_attention",
            summary="attends to the mirror position (tests only)",
            factory=lambda params, context: MirrorAttention(context.channels, context.feature_size),
            identity_at_init=True,
        )
    )
