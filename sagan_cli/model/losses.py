"""Adversarial losses: every loss maps discriminator logits to scalar D and G losses (both minimised)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sagan_cli.api import Critic, GANLoss


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
