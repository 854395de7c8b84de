"""Exponential moving average of the generator's weights (used for samples and evaluation)."""

from __future__ import annotations

import copy
from typing import Generic, TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class EMA(Generic[ModuleT]):
    """``ema = decay * ema + (1 - decay) * weights`` after every G update.

    Until ``start`` (and always when ``decay == 0``) the average copies G. Buffers
    (BN running statistics, spectral norm's u and v) are copied, as BigGAN does.
    """

    def __init__(self, model: ModuleT, decay: float, start: int) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.start = start

    @torch.no_grad()
    def update(self, source: nn.Module, step: int) -> None:
        ema_params: list[torch.Tensor] = list(self.model.parameters())
        params = [p.detach() for p in source.parameters()]
        if step <= self.start or self.decay == 0:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.model.buffers(), source.buffers(), strict=True):
            ema_buffer.copy_(buffer)
