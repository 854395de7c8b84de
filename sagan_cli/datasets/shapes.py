"""``shapes``: a procedural, mirror-symmetric data set where long-range structure matters.

Every image is a dark background with one or more coloured shapes in its left
half and their exact mirror image in the right half. A pixel near the left edge
must match one a whole image-width away, which convolutions alone see only
through a deep stack of layers and attention sees in one step: the structure
self-attention exists for. Images depend only on (data seed, split, index), so
every run, machine and chunking renders the same set.

Structural score (lower is better, exactly 0 for real images):

* ``asymmetry``: mean |x - mirror(x)| over pixels and channels, in [0, 1];
* ``blankness``: how far the share of foreground pixels (differing from the
  border colour by more than 0.2 in some channel) falls below the smallest
  share any real image has, in [0, 1]; it stops a blank image from passing as
  symmetric;
* ``invalidity``: the share of pixels that are neither the flat background nor
  a palette colour (within 0.04 in every channel) and touch no pixel that is
  (8-neighbourhood), in [0, 1]. Real images are flat backgrounds and flat
  palette shapes whose only in-between pixels are one-pixel anti-aliased edges,
  so they score exactly 0; blur, soft colour blobs and noise leave whole
  regions of in-between colours. It stops blurred or blobby samples that
  happen to be symmetric from passing as learnt;
* ``structure`` = asymmetry + blankness + invalidity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sagan_cli.datasets.params import ShapesParams
from sagan_cli.datasets.procedural import ProceduralSource

SHAPES = ("circle", "square", "triangle", "diamond")
PALETTE = torch.tensor(
    [
        [0.95, 0.25, 0.20],
        [0.20, 0.80, 0.30],
        [0.25, 0.45, 0.95],
        [0.95, 0.85, 0.20],
        [0.85, 0.30, 0.90],
        [0.20, 0.85, 0.90],
        [0.98, 0.60, 0.15],
        [0.95, 0.95, 0.95],
    ]
)
SUPERSAMPLE = 4  # at 32x32; 2 above
MARGIN = 2.0  # pixels of pure background at the border, so its colour is recoverable
FOREGROUND_THRESHOLD = 0.2
CLEAN_COLOUR_TOLERANCE = 0.04  # a pixel this close to the background or a palette colour is clean


def _radius_range(resolution: int) -> tuple[float, float]:
    return resolution / 12, resolution / 6


def inside(shape: int, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Mask of shape ``SHAPES[shape]`` in coordinates normalised by its radius."""
    if shape == 0:  # circle
        return dx.square() + dy.square() <= 1.0
    if shape == 1:  # square
        return torch.maximum(dx.abs(), dy.abs()) <= 0.8
    if shape == 2:  # triangle, apex up
        return (dy.abs() <= 1.0) & (dx.abs() <= (dy + 1.0) / 2.0)
    return dx.abs() + dy.abs() <= 1.0  # diamond


def render(
    count: int, resolution: int, max_pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (uint8, (count, 3, R, R)) and labels (the first pair's shape index)."""
    scale = SUPERSAMPLE if resolution <= 32 else 2  # enough anti-aliasing, a quarter the work
    half = resolution // 2
    # Pixel-centre coordinates of the supersampled left half, in output-pixel units.
    ys = (torch.arange(resolution * scale) + 0.5) / scale
    xs = (torch.arange(half * scale) + 0.5) / scale
    ys, xs = ys[:, None], xs[None, :]

    background = torch.rand(count, 3, generator=generator) * 0.25
    canvas = background[:, :, None, None].expand(count, 3, ys.shape[0], xs.shape[1]).clone()
    r_min, r_max = _radius_range(resolution)
    labels = torch.zeros(count, dtype=torch.long)
    for pair in range(max_pairs):
        present = torch.rand(count, generator=generator) < (1.0 if pair == 0 else 0.5)
        kind = torch.randint(len(SHAPES), (count,), generator=generator)
        colour = PALETTE[torch.randint(len(PALETTE), (count,), generator=generator)]
        radius = r_min + torch.rand(count, generator=generator) * (r_max - r_min)
        lo = MARGIN + radius
        cx = lo + torch.rand(count, generator=generator) * (half - 2 * lo).clamp(min=0)
        cy = lo + torch.rand(count, generator=generator) * (resolution - 2 * lo).clamp(min=0)
        if pair == 0:
            labels = kind
        mask = torch.zeros(count, ys.shape[0], xs.shape[1], dtype=torch.bool)
        for index in range(len(SHAPES)):
            rows = torch.nonzero((kind == index) & present).squeeze(1)
            if len(rows):
                dx = (xs[None] - cx[rows, None, None]) / radius[rows, None, None]
                dy = (ys[None] - cy[rows, None, None]) / radius[rows, None, None]
                mask[rows] = inside(index, dx, dy)
        canvas = torch.where(mask[:, None], colour[:, :, None, None], canvas)
    left = F.avg_pool2d(canvas, scale)
    image = torch.cat([left, left.flip(-1)], dim=-1)
    return (image * 255).round().clamp(0, 255).to(torch.uint8), labels


def min_foreground_share(resolution: int) -> float:
    """Half the smallest foreground share a real image can have (one pair of the smallest shape)."""
    r_min, _ = _radius_range(resolution)
    smallest_area = min(math.pi, 1.6**2, 2.0, 2.0) * r_min**2
    return 0.5 * 2 * smallest_area / resolution**2


def structural_score(images: torch.Tensor) -> dict[str, float]:
    """See the module docstring; ``images`` uint8 (B, 3, R, R), mean over the batch."""
    x = images.float() / 255
    asymmetry = (x - x.flip(-1)).abs().mean(dim=(1, 2, 3))
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
    background = border.median(dim=-1).values[:, :, None, None]
    foreground = (
        ((x - background).abs().amax(dim=1) > FOREGROUND_THRESHOLD).float().mean(dim=(1, 2))
    )
    blankness = (1 - foreground / min_foreground_share(images.shape[-1])).clamp(min=0)
    invalid = invalidity(x, background)
    return {
        "structure": float((asymmetry + blankness + invalid).mean()),
        "asymmetry": float(asymmetry.mean()),
        "blankness": float(blankness.mean()),
        "invalidity": float(invalid.mean()),
    }


def invalidity(x: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(B,) share of pixels of no clean colour that touch no clean pixel (see the docstring)."""
    tolerance = CLEAN_COLOUR_TOLERANCE
    near_background = (x - background).abs().amax(dim=1) <= tolerance
    palette = PALETTE.to(x.device)[None, :, :, None, None]  # (1, colours, 3, 1, 1)
    near_palette = ((x[:, None] - palette).abs().amax(dim=2) <= tolerance).any(dim=1)
    clean = (near_background | near_palette).float()[:, None]
    touches_clean = F.max_pool2d(F.pad(clean, (1, 1, 1, 1), value=1.0), 3, stride=1)[:, 0] > 0
    return (~touches_clean).float().mean(dim=(1, 2))


def mirror_partners(size: int) -> torch.Tensor:
    """(size*size,) each position's mirror image x -> size - 1 - x (the dependency ``shapes`` has)."""
    rows = torch.arange(size).repeat_interleave(size)
    cols = size - 1 - torch.arange(size).repeat(size)
    return rows * size + cols


class ShapesSource(ProceduralSource):
    params: ShapesParams
    family = "shapes"

    @property
    def num_classes(self) -> int:
        return len(SHAPES)

    def render_chunk(
        self, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return render(count, self.resolution, self.params.max_pairs, generator)

    def partners(self, size: int) -> torch.Tensor | None:
        return mirror_partners(size)

    def structural_score(self, images: torch.Tensor) -> dict[str, float]:
        return structural_score(images)
