"""Feature normalizations for the generator; forward is always ``(x, labels)``."""

from __future__ import annotations

import torch
from torch import nn


class BatchNorm2d(nn.BatchNorm2d):
    """Plain batch norm that accepts (and ignores) labels, so every G norm shares one call."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class NoFeatureNorm(nn.Module):
    """The identity with G's norm signature: no feature normalization."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return x


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias are looked up per class (de Vries et al., 2017).

    Gains start at 1 and biases at 0, so an untrained CBN equals plain BN. With
    ``num_classes == 0`` it is plain (affine) batch norm, which the generator's
    final normalization uses, as in the official code.
    """

    def __init__(self, num_features: int, num_classes: int, momentum: float, eps: float):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(num_features, momentum=momentum, eps=eps, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, num_features)
            self.bias = nn.Embedding(num_classes, num_features)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = self.bn(x)
        if not self.num_classes:
            return out
        if labels is None:
            raise ValueError("ConditionalBatchNorm2d needs labels for a class-conditional model")
        gain = self.gain(labels)[:, :, None, None]
        bias = self.bias(labels)[:, :, None, None]
        return out * gain + bias
