"""A collapsed generator: every latent gives the same image (blank, flat or one picture) for
several checks in a row. Such a run has diverged as surely as one with NaN losses (exit 3),
and keeping on training it only spends time."""

from __future__ import annotations

import torch

from sagan_cli.model.sampling import sample_images
from sagan_cli.train.callbacks import Callback, Loop, every
from sagan_cli.train.callbacks.samples import SAMPLE_SEED_OFFSET
from sagan_cli.train.session import Diverged

COLLAPSED_CHECKS = 3  # checks in a row with one image for every latent
CHECK_IMAGES = 16
SPREAD = 1.0  # mean per-pixel std over the samples, in intensity levels: below it, one image


def spread(images: torch.Tensor) -> float:
    """How much uint8 samples (B, 3, R, R) differ from each other: the mean over pixels of their
    standard deviation across the batch, in intensity levels (0: all the same image)."""
    return float(images.float().std(dim=0).mean())


class CollapseCheck(Callback):
    """Every ``every`` steps (and at the start), the EMA generator on a fixed batch of latents:
    the same on every rank (identical weights), so every rank reaches the same verdict."""

    needs_finite = True

    def __init__(self, every_steps: int) -> None:
        self.every_steps = every_steps

    def due(self, step: int, last: bool) -> bool:
        return every(self.every_steps, step, last)

    def on_step(self, loop: Loop) -> None:
        session = loop.session
        seed = session.recipe.seed + SAMPLE_SEED_OFFSET
        images = sample_images(
            session.ema.model, CHECK_IMAGES, seed, session.device, session.precision
        )
        found = spread(images)
        session.collapsed_checks = session.collapsed_checks + 1 if found < SPREAD else 0
        if session.collapsed_checks >= COLLAPSED_CHECKS:
            raise Diverged(
                session.step,
                f"the generator collapsed: every latent gave the same image ({found:.2f} intensity "
                f"levels of spread across {CHECK_IMAGES} samples) for {COLLAPSED_CHECKS} checks "
                f"in a row",
            )
