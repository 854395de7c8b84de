"""A hinge loss that returns NaN from a chosen step: drives the divergence tests."""

from pydantic import Field

from sagan_cli.builtins.losses import Hinge
from sagan_cli.plugins import LossPlugin, PluginParams, hookimpl


class NanParams(PluginParams):
    nan_from_call: int = Field(3, ge=1, description="the n-th D loss (counting from 1) is NaN")


class NanFromCall(Hinge):
    def __init__(self, nan_from_call: int) -> None:
        self.nan_from_call = nan_from_call
        self.calls = 0

    def d_loss(self, real_logits, fake_logits):
        self.calls += 1
        loss = super().d_loss(real_logits, fake_logits)
        return loss * float("nan") if self.calls >= self.nan_from_call else loss


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
