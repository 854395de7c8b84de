"""``glyphs``: twin random glyphs far apart, a long-range dependency made for content-based attention.

Every image is a dark background split into four quadrants. The top-left one
holds a glyph: a ``glyph`` x ``glyph`` grid of cells, half of them (chosen at
random per image) filled with one palette colour, the rest background; the
bottom-right quadrant holds an exact copy at the same place within it. The
other two quadrants hold distractor shapes (``shapes``' kinds and palette).
Each glyph is one of C(36, 18) ~ 9e9 patterns, so a generator cannot memorise
them: it must draw a new one and the same one again half an image away, which
a convolution at 16x16 sees only after several layers, and attention in one step.
A cell is 1/16 of the image (2 pixels at 32 px): one position of a 16x16 feature map.

The declared dependency (``partners``): every position of the top-left quadrant
and the one half an image down and right of it are each other's partners, at
every feature size; the other positions are their own.

Structural score (lower is better, exactly 0 for real images):

* ``mismatch``: how much less the two glyph windows of an image agree than chance:
  mean |A - B| over the batch divided by mean |A - B'|, B' the second window of
  the next image in the batch (chance agreement of two unrelated glyphs), clipped
  to [0, 1]: 0 for exact copies, 1 for no relation. The ratio does not reward
  faint windows, which differ little from anything (needs a batch of two or more);
* ``fill``: per window, how far its share of foreground pixels (differing from the
  border colour by more than 0.2 in some channel) is from a glyph's 1/2, as
  |share - 1/2| / (1/2), mean over the two windows, in [0, 1]: two blank or two
  solid windows agree, but are not glyphs;
* ``invalidity``: as for ``shapes``: the share of pixels of no clean colour touching no
  clean pixel; it stops blurred blobs from passing as glyphs;
* ``structure`` = mismatch + fill + invalidity.
"""

from __future__ import annotations

import torch

from sagan_cli.datasets.params import GlyphsParams
from sagan_cli.datasets.procedural import ProceduralSource
from sagan_cli.datasets.shapes import (
    FOREGROUND_THRESHOLD,
    PALETTE,
    SHAPES,
    inside,
    invalidity,
)

CELLS = 16  # a cell is 1/16 of the image side
REAL_SHARE = 0.5  # half of a glyph's cells are filled


def glyph_window(resolution: int, glyph: int) -> tuple[slice, slice]:
    """Rows and columns of the top-left glyph, centred in its quadrant."""
    cell = resolution // CELLS
    start = (CELLS // 2 - glyph) // 2 * cell
    span = slice(start, start + glyph * cell)
    return span, span


def render(
    count: int, resolution: int, glyph: int, distractors: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` images, uint8 (count, 3, R, R)."""
    cell, half = resolution // CELLS, resolution // 2
    background = torch.rand(count, 3, generator=generator) * 0.25
    canvas = background[:, :, None, None].expand(count, 3, resolution, resolution).clone()

    cells = glyph * glyph
    order = torch.rand(count, cells, generator=generator).argsort(dim=1)
    pattern = (order < cells // 2).reshape(count, glyph, glyph)
    colour = PALETTE[torch.randint(len(PALETTE), (count,), generator=generator)]
    mask = pattern.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    rows, cols = glyph_window(resolution, glyph)
    for top, left in ((0, 0), (half, half)):
        window = canvas[
            :, :, top + rows.start : top + rows.stop, left + cols.start : left + cols.stop
        ]
        window.copy_(torch.where(mask[:, None], colour[:, :, None, None], window))

    # Distractors: one hard-edged shape per draw, in the top-right or bottom-left quadrant.
    ys = (torch.arange(half) + 0.5)[:, None]
    xs = (torch.arange(half) + 0.5)[None, :]
    r_min, r_max = resolution / 16, resolution / 10
    for _ in range(distractors):
        kind = torch.randint(len(SHAPES), (count,), generator=generator)
        shade = PALETTE[torch.randint(len(PALETTE), (count,), generator=generator)]
        radius = r_min + torch.rand(count, generator=generator) * (r_max - r_min)
        lo = cell + radius
        cx = lo + torch.rand(count, generator=generator) * (half - 2 * lo)
        cy = lo + torch.rand(count, generator=generator) * (half - 2 * lo)
        top_right = torch.rand(count, generator=generator) < 0.5
        for index in range(count):
            dx = (xs - cx[index]) / radius[index]
            dy = (ys - cy[index]) / radius[index]
            shape = inside(int(kind[index]), dx, dy)
            top, left = (0, half) if top_right[index] else (half, 0)
            region = canvas[index, :, top : top + half, left : left + half]
            region.copy_(torch.where(shape[None], shade[index, :, None, None], region))
    return (canvas * 255).round().clamp(0, 255).to(torch.uint8)


def quadrant_partners(size: int) -> torch.Tensor:
    """(size*size,) the position half a map down and right (or up and left) of each position in
    the top-left and bottom-right quadrants; every other position is its own partner."""
    half = size // 2
    rows = torch.arange(size).repeat_interleave(size)
    cols = torch.arange(size).repeat(size)
    first = (rows < half) & (cols < half)
    second = (rows >= half) & (cols >= half)
    shift = torch.where(first, half, torch.where(second, -half, 0))
    return (rows + shift) * size + cols + shift


def structural_score(images: torch.Tensor, glyph: int) -> dict[str, float]:
    """See the module docstring; ``images`` uint8 (B, 3, R, R), mean over the batch."""
    x = images.float() / 255
    resolution, half = x.shape[-1], x.shape[-1] // 2
    rows, cols = glyph_window(resolution, glyph)
    first = x[:, :, rows, cols]
    second = x[:, :, half + rows.start : half + rows.stop, half + cols.start : half + cols.stop]
    differences = (first - second).abs().mean(dim=(1, 2, 3))
    if len(x) > 1:
        chance = (first - second.roll(1, dims=0)).abs().mean()
        mismatch = (differences.mean() / chance.clamp(min=1e-6)).clamp(max=1.0)
    else:
        mismatch = differences.mean()
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
    background = border.median(dim=-1).values[:, :, None, None]
    fill = torch.zeros(len(x))
    for window in (first, second):
        share = ((window - background).abs().amax(dim=1) > FOREGROUND_THRESHOLD).float()
        fill += ((share.mean(dim=(1, 2)) - REAL_SHARE).abs() / REAL_SHARE).clamp(max=1.0) / 2
    invalid = invalidity(x, background)
    return {
        "structure": float(mismatch + fill.mean() + invalid.mean()),
        "mismatch": float(mismatch),
        "fill": float(fill.mean()),
        "invalidity": float(invalid.mean()),
    }


class GlyphsSource(ProceduralSource):
    params: GlyphsParams
    family = "glyphs"

    @property
    def num_classes(self) -> int:
        return 0

    def render_chunk(
        self, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = render(
            count, self.resolution, self.params.glyph, self.params.distractors, generator
        )
        return images, None

    def partners(self, size: int) -> torch.Tensor | None:
        return quadrant_partners(size)

    def structural_score(self, images: torch.Tensor) -> dict[str, float]:
        return structural_score(images, self.params.glyph)
