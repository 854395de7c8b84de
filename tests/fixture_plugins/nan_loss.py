"""A hinge loss that turns NaN from a chosen call: drives the divergence tests.

``nan_from_call`` makes the D loss itself NaN; ``nan_grad_from_call`` keeps G's loss finite
but makes its gradient NaN, so the weights go non-finite while every logged loss is finite
(the case a finite-loss check alone misses).
"""

import torch
import torch.nn.functional as F
from pydantic import Field

from sagan_cli.api import GANLoss, LossPlugin, PluginParams, hookimpl


class NanParams(PluginParams):
    nan_from_call: int = Field(3, ge=1, description="the n-th D loss (counting from 1) is NaN")
    nan_grad_from_call: int = Field(
        10**9, ge=1, description="the n-th G loss (counting from 1) has a NaN gradient"
    )


class NanFromCall(GANLoss):
    def __init__(self, nan_from_call: int, nan_grad_from_call: int) -> None:
        self.nan_from_call = nan_from_call
        self.nan_grad_from_call = nan_grad_from_call
        self.calls = 0
        self.g_calls = 0

    def d_loss(self, real_logits, fake_logits):
        self.calls += 1
        loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        return loss * float("nan") if self.calls >= self.nan_from_call else loss

    def g_loss(self, fake_logits):
        self.g_calls += 1
        loss = -fake_logits.mean()
        if self.g_calls < self.nan_grad_from_call:
            return loss
        # sqrt'(0) is inf and 0 * inf is NaN: the value is unchanged, the gradient is NaN
        return loss + 0.0 * torch.sqrt(loss - loss.detach())


@hookimpl
def sagan_register_loss(register):
    register(
        LossPlugin(
            api_version=1,
            name="nan_hinge",
            summary="hinge that turns NaN (tests only)",
            params=NanParams,
            factory=lambda params: NanFromCall(params.nan_from_call, params.nan_grad_from_call),
        )
    )
