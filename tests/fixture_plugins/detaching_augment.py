"""An augmentation that detaches the images: G would learn nothing through it (tests only)."""

import torch
from torch import nn

from sagan_cli.api import AugmentPlugin, hookimpl


class Detaching(nn.Module):
    def forward(self, images, generator):
        noise = torch.rand(images.shape, generator=generator, device=images.device) * 0.01
        return images.detach() + noise


@hookimpl
def sagan_register_augment(register):
    register(
        AugmentPlugin(
            api_version=1, name="detaching", summary="t", factory=lambda p, c: Detaching()
        )
    )
