"""SAGAN generator and discriminator: ResNet blocks as in the official 128x128 model.

Every layer is built through three injected callables, so the networks know
nothing about which plugins the recipe chose:

* ``weight_norm(layer) -> layer`` wraps every conv, linear and embedding
  (spectral norm on G and D in SAGAN);
* ``feature_norm(num_features, num_classes, size) -> module(x, labels)`` is G's
  normalization (class-conditional BN when ``num_classes > 0``) for a feature
  map of ``size`` x ``size``;
* ``attention(channels, size) -> module`` builds the block inserted after the
  residual blocks whose output size is listed in ``attention_sizes``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sagan_cli.model import arch

WeightNorm = Callable[[nn.Module], nn.Module]
FeatureNorm = Callable[[int, int, int], nn.Module]
AttentionFactory = Callable[[int, int], nn.Module]


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


class GeneratorBlock(nn.Module):
    """norm-ReLU-up-conv-norm-ReLU-conv, plus an upsampled 1x1-conv shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        out_size: int,
        num_classes: int,
        weight_norm: WeightNorm,
        feature_norm: FeatureNorm,
    ) -> None:
        super().__init__()
        self.norm1 = feature_norm(in_channels, num_classes, out_size // 2)
        self.conv1 = weight_norm(conv3x3(in_channels, out_channels))
        self.norm2 = feature_norm(out_channels, num_classes, out_size)
        self.conv2 = weight_norm(conv3x3(out_channels, out_channels))
        self.shortcut = weight_norm(conv1x1(in_channels, out_channels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # in-place ReLUs on fresh outputs: nothing else holds them, so no copy is needed
        h = F.interpolate(
            F.relu(self.norm1(x, labels), inplace=True), scale_factor=2.0, mode="nearest"
        )
        h = self.conv2(F.relu(self.norm2(self.conv1(h), labels), inplace=True))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DiscriminatorBlock(nn.Module):
    """(ReLU)-conv-ReLU-conv-(avgpool), plus a shortcut; the first block skips the leading ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        downsample: bool,
        first: bool,
        weight_norm: WeightNorm,
    ) -> None:
        super().__init__()
        self.first = first
        self.downsample = downsample
        self.conv1 = weight_norm(conv3x3(in_channels, out_channels))
        self.conv2 = weight_norm(conv3x3(out_channels, out_channels))
        learnable = in_channels != out_channels or downsample
        self.shortcut = weight_norm(conv1x1(in_channels, out_channels)) if learnable else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)  # x also feeds the shortcut: not in place
        h = self.conv2(F.relu(self.conv1(h), inplace=True))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        skip = x
        if self.shortcut is not None:
            # The first block pools before its 1x1 conv (cheaper on 3 channels, as officially).
            if self.first and self.downsample:
                skip = self.shortcut(F.avg_pool2d(skip, 2))
            else:
                skip = self.shortcut(skip)
                if self.downsample:
                    skip = F.avg_pool2d(skip, 2)
        return h + skip


class Generator(nn.Module):
    """z (B, z_dim) [+ labels (B,)] -> images (B, 3, R, R) in [-1, 1]."""

    def __init__(
        self,
        resolution: int,
        base_channels: int,
        z_dim: int,
        num_classes: int,
        attention_sizes: Sequence[int],
        weight_norm: WeightNorm,
        feature_norm: FeatureNorm,
        attention: AttentionFactory,
    ) -> None:
        super().__init__()
        layout = arch.GENERATOR[resolution]
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.start_channels = layout.start_width * base_channels
        self.linear = weight_norm(nn.Linear(z_dim, 4 * 4 * self.start_channels))
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        channels = self.start_channels
        for block in layout.blocks:
            out_channels = block.width * base_channels
            self.blocks.append(
                GeneratorBlock(
                    channels, out_channels, block.size, num_classes, weight_norm, feature_norm
                )
            )
            channels = out_channels
            if block.size in attention_sizes:
                self.attention[str(block.size)] = attention(channels, block.size)
        self.final_norm = feature_norm(channels, 0, resolution)
        self.to_rgb = weight_norm(conv3x3(channels, 3))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(z).view(z.shape[0], self.start_channels, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
            key = str(h.shape[-1])
            if key in self.attention:
                h = self.attention[key](h)
        return torch.tanh(self.to_rgb(F.relu(self.final_norm(h, None), inplace=True)))


class Discriminator(nn.Module):
    """images (B, 3, R, R) [+ labels] -> logits (B,): linear head plus the projection term."""

    def __init__(
        self,
        resolution: int,
        base_channels: int,
        num_classes: int,
        attention_sizes: Sequence[int],
        weight_norm: WeightNorm,
        attention: AttentionFactory,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        channels = 3
        self.attention_after: dict[int, str] = {}  # block index -> key of the attention after it
        for index, block in enumerate(arch.DISCRIMINATOR[resolution]):
            out_channels = block.width * base_channels
            self.blocks.append(
                DiscriminatorBlock(channels, out_channels, block.resample, index == 0, weight_norm)
            )
            channels = out_channels
            key = str(block.size)
            if block.size in attention_sizes and key not in self.attention:
                self.attention[key] = attention(channels, block.size)
                self.attention_after[index] = key
        self.linear = weight_norm(nn.Linear(channels, 1))
        self.embed = weight_norm(nn.Embedding(num_classes, channels)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index in self.attention_after:
                h = self.attention[self.attention_after[index]](h)
        features = F.relu(h).sum(dim=(2, 3))  # global sum pooling, (B, C)
        logits = self.linear(features).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional discriminator needs labels")
            logits = logits + (self.embed(labels) * features).sum(dim=1)
        return logits
