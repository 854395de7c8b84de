"""Block layouts of the SAGAN generator and discriminator per image resolution.

Widths are multiples of the base width (``g_channels``/``d_channels``, the
official code's ``gf_dim``/``df_dim`` = 64). The 128x128 layouts are the
official SAGAN model's; 32 and 64 follow the same pattern with fewer blocks
(as BigGAN-PyTorch's ``G_arch``/``D_arch`` do):

    G 128 (gf=64): z -> linear 4x4x1024 -> up 1024@8, 512@16, 256@32, 128@64, 64@128
    D 128 (df=64): down 64@64, 128@32, 256@16, 512@8, 1024@4, then 1024@4 (no resampling)

Attention goes after the block whose output has the listed feature size
(in D, the first such block). Pure Python so recipes validate without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

RESOLUTIONS = (32, 64, 128)


@dataclass(frozen=True)
class Block:
    """One residual block: output width multiplier, output feature size, resampling."""

    width: int
    size: int
    resample: bool = True


@dataclass(frozen=True)
class GeneratorLayout:
    start_width: int  # width multiplier of the 4x4 map the linear layer produces
    blocks: tuple[Block, ...]


GENERATOR = {
    32: GeneratorLayout(4, (Block(4, 8), Block(4, 16), Block(4, 32))),
    64: GeneratorLayout(16, (Block(16, 8), Block(8, 16), Block(4, 32), Block(2, 64))),
    128: GeneratorLayout(
        16, (Block(16, 8), Block(8, 16), Block(4, 32), Block(2, 64), Block(1, 128))
    ),
}

DISCRIMINATOR = {
    32: (Block(4, 16), Block(4, 8), Block(4, 8, False), Block(4, 8, False)),
    64: (Block(1, 32), Block(2, 16), Block(4, 8), Block(8, 4), Block(16, 4, False)),
    128: (
        Block(1, 64),
        Block(2, 32),
        Block(4, 16),
        Block(8, 8),
        Block(16, 4),
        Block(16, 4, False),
    ),
}


def generator_sizes(resolution: int) -> list[int]:
    """Feature-map sizes at which the generator can take attention."""
    return sorted({b.size for b in GENERATOR[resolution].blocks})


def discriminator_sizes(resolution: int) -> list[int]:
    """Feature-map sizes at which the discriminator can take attention."""
    return sorted({b.size for b in DISCRIMINATOR[resolution]})


def shared_sizes(resolution: int) -> list[int]:
    """Sizes valid for ``model.attention_layer``, which applies to both networks."""
    return sorted(set(generator_sizes(resolution)) & set(discriminator_sizes(resolution)))


def _layers(
    resolution: int, g_base: int, d_base: int
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """(in channels, out channels, output size) of every residual block of G and of D."""
    layout = GENERATOR[resolution]
    g_blocks, channels = [], layout.start_width * g_base
    for block in layout.blocks:
        g_blocks.append((channels, block.width * g_base, block.size))
        channels = block.width * g_base
    d_blocks, channels = [], 3
    for block in DISCRIMINATOR[resolution]:
        d_blocks.append((channels, block.width * d_base, block.size))
        channels = block.width * d_base
    return g_blocks, d_blocks


def parameter_estimate(resolution: int, g_base: int, d_base: int, z_dim: int) -> tuple[int, int]:
    """Parameters of G and D from the conv and linear layers alone (no attention, no norms):
    pure arithmetic, so absurd widths are caught before anything is allocated."""
    g_blocks, d_blocks = _layers(resolution, g_base, d_base)
    start = GENERATOR[resolution].start_width * g_base
    g = z_dim * 16 * start + g_blocks[-1][1] * 3 * 9
    g += sum(i * o * 9 + o * o * 9 + i * o for i, o, _ in g_blocks)
    d = sum(i * o * 9 + o * o * 9 + i * o for i, o, _ in d_blocks) + d_blocks[-1][1]
    return g, d


def activation_estimate(resolution: int, g_base: int, d_base: int) -> int:
    """Feature-map elements one image keeps for backward in one iteration, roughly: two
    activations per conv in G's blocks, D's blocks run on real, fake and G's fakes."""
    g_blocks, d_blocks = _layers(resolution, g_base, d_base)
    g = sum(2 * (i + o) * s * s for i, o, s in g_blocks)
    d = sum(2 * (i + o) * s * s for i, o, s in d_blocks)
    return g + 3 * d


def feature_channels(network: str, resolution: int, base_channels: int) -> dict[int, int]:
    """Feature size -> channels where attention can sit (in D, after the first block of a size)."""
    blocks = GENERATOR[resolution].blocks if network == "g" else DISCRIMINATOR[resolution]
    found: dict[int, int] = {}
    for block in blocks:
        found.setdefault(block.size, block.width * base_channels)
    return dict(sorted(found.items()))


def iteration_flops_estimate(resolution: int, g_base: int, d_base: int, batch: int) -> float:
    """FLOPs of one training iteration from the 3x3 convolutions alone (the bulk of it): G runs
    twice (D step, G step), D three times (real, fake, G step); backward costs twice forward."""
    g_blocks, d_blocks = _layers(resolution, g_base, d_base)
    g = sum(2 * 9 * (i * o + o * o) * s * s for i, o, s in g_blocks)
    d = sum(2 * 9 * (i * o + o * o) * (2 * s) ** 2 / 4 for i, o, s in d_blocks)
    return batch * 3 * (2 * g + 3 * d)
