"""Differentiable augmentation of the images D sees: DiffAugment (Zhao et al., NeurIPS 2020).

Every transform is applied per image with parameters drawn from the ``generator``
the host seeds for the call, and is differentiable in the images, so G learns
through it. Images are (B, 3, R, R) in [-1, 1]:

* ``color``: brightness ``x + (u - 0.5)``, saturation ``m + (x - m) * 2u`` around the
  per-pixel channel mean m, contrast ``m + (x - m) * (u + 0.5)`` around the image
  mean (u uniform in [0, 1), one per image and transform);
* ``translation``: a shift of the whole image by integers in
  [-ratio*R, ratio*R] on each axis, filled with zeros (mid-grey);
* ``cutout``: a square of side ratio*R, placed uniformly inside the image, set to zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _uniform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One value in [0, 1) per image, shaped to broadcast over (C, H, W)."""
    values = torch.rand(images.shape[0], 1, 1, 1, generator=generator, device=images.device)
    return values.to(images.dtype)


def brightness(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return images + (_uniform(images, generator) - 0.5)


def saturation(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mean = images.mean(dim=1, keepdim=True)
    return (images - mean) * (_uniform(images, generator) * 2) + mean


def contrast(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (_uniform(images, generator) + 0.5) + mean


def translation(images: torch.Tensor, generator: torch.Generator, ratio: float) -> torch.Tensor:
    """Shift each image by (dy, dx) pixels, |d| <= round(ratio * size); zeros come in."""
    batch, _, height, width = images.shape
    most_y, most_x = round(height * ratio), round(width * ratio)
    device = images.device
    dy = torch.randint(-most_y, most_y + 1, (batch, 1, 1), generator=generator, device=device)
    dx = torch.randint(-most_x, most_x + 1, (batch, 1, 1), generator=generator, device=device)
    rows = torch.arange(height, device=device)[None, :, None] - dy  # source row of each pixel
    cols = torch.arange(width, device=device)[None, None, :] - dx
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # (B, H, W)
    padded = F.pad(images, [1, 1, 1, 1])  # a zero border to gather from when outside
    index = (rows.clamp(-1, height) + 1) * (width + 2) + (cols.clamp(-1, width) + 1)
    flat = padded.flatten(2)  # (B, C, (H+2)(W+2))
    gathered = flat.gather(2, index.flatten(1)[:, None, :].expand(-1, images.shape[1], -1))
    return gathered.view_as(images) * inside[:, None].to(images.dtype)


def cutout(images: torch.Tensor, generator: torch.Generator, ratio: float) -> torch.Tensor:
    """Zero a square of side round(ratio * size), placed uniformly inside each image."""
    batch, _, height, width = images.shape
    size_y, size_x = round(height * ratio), round(width * ratio)
    device = images.device
    top = torch.randint(0, height - size_y + 1, (batch, 1, 1), generator=generator, device=device)
    left = torch.randint(0, width - size_x + 1, (batch, 1, 1), generator=generator, device=device)
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return images * (~hole)[:, None].to(images.dtype)


class DiffAugment(nn.Module):
    """The policies in order (color, then translation, then cutout, as listed)."""

    def __init__(self, policy: list[str], translation_ratio: float, cutout_ratio: float) -> None:
        super().__init__()
        self.policy = list(policy)
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for name in self.policy:
            if name == "color":
                for transform in (brightness, saturation, contrast):
                    images = transform(images, generator)
            elif name == "translation":
                images = translation(images, generator, self.translation_ratio)
            elif name == "cutout":
                images = cutout(images, generator, self.cutout_ratio)
        return images


class NoAugment(nn.Module):
    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images
