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
