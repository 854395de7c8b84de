"""Built-in adversarial losses: ``hinge`` (the paper's), ``nonsaturating``, ``least_squares``,
``wasserstein`` (with gradient penalty). The maths is in ``sagan_cli.model.losses``."""

from __future__ import annotations

from pydantic import Field

from sagan_cli.api import GANLoss, LossPlugin, NoParams, PluginParams, Register, hookimpl


class WassersteinParams(PluginParams):
    gp_weight: float = Field(10.0, ge=0, description="gradient-penalty weight (lambda)")


def build_hinge(params: NoParams) -> GANLoss:
    from sagan_cli.model.losses import Hinge

    return Hinge()


def build_nonsaturating(params: NoParams) -> GANLoss:
    from sagan_cli.model.losses import NonSaturating

    return NonSaturating()


def build_least_squares(params: NoParams) -> GANLoss:
    from sagan_cli.model.losses import LeastSquares

    return LeastSquares()


def build_wasserstein(params: WassersteinParams) -> GANLoss:
    from sagan_cli.model.losses import WassersteinGP

    return WassersteinGP(params.gp_weight)


PLUGINS = (
    LossPlugin(
        api_version=1,
        name="hinge",
        summary="Hinge loss, as in SAGAN and SN-GAN",
        factory=build_hinge,
    ),
    LossPlugin(
        api_version=1,
        name="nonsaturating",
        summary="Non-saturating logistic loss (Goodfellow et al., 2014)",
        factory=build_nonsaturating,
    ),
    LossPlugin(
        api_version=1,
        name="least_squares",
        summary="Least-squares loss (LSGAN, Mao et al., 2017)",
        factory=build_least_squares,
    ),
    LossPlugin(
        api_version=1,
        name="wasserstein",
        summary="Wasserstein loss with gradient penalty (WGAN-GP, Gulrajani et al., 2017)",
        params=WassersteinParams,
        factory=build_wasserstein,
    ),
)


@hookimpl
def sagan_register_loss(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
