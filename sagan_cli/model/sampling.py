"""Sampling a generator into uint8 images: one path for sample grids, scores and metrics."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sagan_cli.device import autocast
from sagan_cli.model.networks import Generator


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255], rounding to nearest (what a PNG of it holds)."""
    return ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (float32; float64 inside an fp64 run): what D sees."""
    return images.to(torch.get_default_dtype()).div_(127.5).sub_(1.0)


def fixed_inputs(
    count: int,
    z_dim: int,
    num_classes: int,
    seed: int,
    truncation: float | None = None,
    label: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents from a CPU generator (the same on every device) and labels: class-balanced, or
    all ``label``. ``truncation``: the truncation trick (BigGAN): every entry from the standard
    normal truncated to [-T, T], drawn in closed form (the inverse CDF of a uniform draw over
    [Phi(-T), Phi(T)]), so any T > 0 takes one draw, however small."""
    generator = torch.Generator().manual_seed(seed)
    if truncation is None:
        z = torch.randn(count, z_dim, generator=generator)
    else:
        low = torch.special.ndtr(torch.tensor(-truncation, dtype=torch.float64))
        uniform = torch.rand(count, z_dim, generator=generator, dtype=torch.float64)
        z = torch.special.ndtri(low + uniform * (1 - 2 * low)).clamp(-truncation, truncation)
        z = z.to(torch.float32)
    labels = None
    if num_classes:
        labels = (
            torch.full((count,), label) if label is not None else torch.arange(count) % num_classes
        )
    return z, labels


@torch.no_grad()
def sample_images(
    generator: Generator,
    count: int,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 64,
    on_batch: Callable[[int], None] = lambda n: None,
    truncation: float | None = None,
    label: int | None = None,
) -> torch.Tensor:
    """``count`` uint8 images (count, 3, R, R) on the CPU from ``generator`` in eval mode."""
    was_training = generator.training
    generator.eval()
    z, labels = fixed_inputs(count, generator.z_dim, generator.num_classes, seed, truncation, label)
    out = []
    try:
        for start in range(0, count, batch_size):
            batch_z = z[start : start + batch_size].to(device)
            batch_labels = None if labels is None else labels[start : start + batch_size].to(device)
            with autocast(device, precision):
                images = generator(batch_z, batch_labels)
            out.append(to_uint8(images).cpu())
            on_batch(len(batch_z))
    finally:
        generator.train(was_training)
    return torch.cat(out)
