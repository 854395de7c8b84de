"""A hinge loss that returns NaN from a chosen step: drives the divergence tests."""

import torch.nn.functional as F
from pydantic import Field

from sagan_cli.api import GANLoss, LossPlugin, PluginParams, hookimpl


class NanParams(PluginParams):
    nan_from_call: int = Field(3, ge=1, description="the n-th D loss (counting from 1) is NaN")


class NanFromCall(GANLoss):
    def __init__(self, nan_from_call: int) -> None:
        self.nan_from_call = nan_from_call
        self.calls = 0

    def d_loss(self, real_logits, fake_logits):
        self.calls += 1
        loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        return loss * float("nan") if self.calls >= self.nan_from_call else loss

    def g_loss(self, fake_logits):
        return -fake_logits.mean()


@hookimpl
def sagan_register_loss(register):
    register(
        LossPlugin(
            name="nan_hinge",
            summary="hinge that turns NaN (tests only)",
            params=NanParams,
            factory=lambda params: NanFromCall(params.nan_from_call),
        )
    )
