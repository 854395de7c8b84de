"""Built-in adversarial losses: ``hinge`` (the paper's), ``nonsaturating``, ``least_squares``,
``wasserstein`` (with gradient penalty).

Every loss maps discriminator logits to scalar D and G losses (both minimised).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field

from sagan_cli.plugins import LossPlugin, PluginParams, Register, hookimpl

Critic = Callable[[torch.Tensor], torch.Tensor]


class GANLoss:
    """The loss contract. Subclass and override ``d_loss`` and ``g_loss``; ``penalty`` is optional."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        """An extra D term computed from the critic itself (``None``: no penalty)."""
        return None


class Hinge(GANLoss):
    """D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))];  G: -E[D(G(z))]  (paper Eq. 6)."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


class NonSaturating(GANLoss):
    """D: E[softplus(-D(x))] + E[softplus(D(G(z)))];  G: E[softplus(-D(G(z)))]."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake_logits).mean()


class LeastSquares(GANLoss):
    """LSGAN with targets 1 (real) and 0 (fake): D: (E[(D(x)-1)^2] + E[D(G(z))^2]) / 2."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real_logits - 1.0).square().mean() + fake_logits.square().mean())

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake_logits - 1.0).square().mean()


class WassersteinGP(GANLoss):
    """WGAN-GP: D: E[D(G(z))] - E[D(x)] + weight * E[(||grad D(x_hat)|| - 1)^2]."""

    def __init__(self, gp_weight: float) -> None:
        self.gp_weight = gp_weight

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()

    def penalty(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        if self.gp_weight == 0:
            return None
        mix = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
        return self.gp_weight * (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


class WassersteinParams(PluginParams):
    gp_weight: float = Field(10.0, ge=0, description="gradient-penalty weight (lambda)")


PLUGINS = (
    LossPlugin(
        name="hinge",
        summary="Hinge loss, as in SAGAN and SN-GAN",
        factory=lambda params: Hinge(),
    ),
    LossPlugin(
        name="nonsaturating",
        summary="Non-saturating logistic loss (Goodfellow et al., 2014)",
        factory=lambda params: NonSaturating(),
    ),
    LossPlugin(
        name="least_squares",
        summary="Least-squares loss (LSGAN, Mao et al., 2017)",
        factory=lambda params: LeastSquares(),
    ),
    LossPlugin(
        name="wasserstein",
        summary="Wasserstein loss with gradient penalty (WGAN-GP, Gulrajani et al., 2017)",
        params=WassersteinParams,
        factory=lambda params: WassersteinGP(params.gp_weight),
    ),
)


@hookimpl
def sagan_register_loss(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
