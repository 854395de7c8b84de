"""Where attention looks: the maps of every attention layer, and statistics of them.

A layer's map is beta (B, N, M) from ``AttentionMaps.attention_maps``: row j is
the weights query position j (of the H x W map, row-major) gives to the M
attended positions on the layer's ``key_grid`` (h x w; coarser when keys are
pooled). Positions are compared in image coordinates: a cell's centre as a
fraction of the image width, so layers of every size share one scale.

Statistics per layer (means over queries and images):

* ``distance``: expected distance between a query and where it attends,
  sum_i beta_ji * |p_j - c_i|, as a fraction of the image width;
* ``entropy``: -sum_i beta_ji log beta_ji / log M, from 0 (one position) to 1
  (uniform);
* ``partner``: the share of attention mass on the key cell holding the query's
  partner, the position the data declares it must agree with
  (``DataSource.partners``: the mirror image on ``shapes``, the twin glyph's
  cell on ``glyphs``): the long-range structure attention should find. Only
  for data that declares partners; uniform attention scores 1 / M. Runs of
  0.2 recorded the same number as ``mirror`` (shapes only).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sagan_cli.api import AttentionMaps
from sagan_cli.device import at_least_fp32


@dataclass(frozen=True)
class Layer:
    """One attention layer of a network: its name, feature size and module."""

    network: str  # "g" or "d"
    size: int
    module: nn.Module

    @property
    def name(self) -> str:
        return f"{self.network}{self.size}"

    @property
    def has_maps(self) -> bool:
        return isinstance(self.module, AttentionMaps)


def attention_layers(network: nn.Module, name: str) -> list[Layer]:
    """The attention modules of a Generator or Discriminator, by feature size."""
    modules = getattr(network, "attention", {})
    return [Layer(name, int(size), module) for size, module in modules.items()]


@contextlib.contextmanager
def captured_inputs(layers: list[Layer]) -> Iterator[dict[str, torch.Tensor]]:
    """Inside: each layer's input feature map of the last forward, by layer name."""
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        layer.module.register_forward_pre_hook(
            lambda module, args, name=layer.name: inputs.__setitem__(name, args[0].detach())
        )
        for layer in layers
    ]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def maps_of(layer: Layer, features: torch.Tensor) -> torch.Tensor:
    """beta (B, N, M) of ``layer`` for its input ``features`` (bf16 ones taken in fp32), in at
    least fp32, without gradients."""
    assert isinstance(layer.module, AttentionMaps)
    with torch.no_grad():
        return at_least_fp32(layer.module.attention_maps(at_least_fp32(features)))


def grid_centres(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(height * width, 2) cell centres (x, y) as fractions of the image width, row-major."""
    ys, xs = torch.meshgrid(
        (torch.arange(height, device=device) + 0.5) / height,
        (torch.arange(width, device=device) + 0.5) / width,
        indexing="ij",
    )
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


def partner_cells(partners: torch.Tensor, size: int, key_grid: tuple[int, int]) -> torch.Tensor:
    """(N,) index of the key cell (on the h x w ``key_grid``) holding each query's partner."""
    h, w = key_grid
    rows, cols = partners // size, partners % size
    return (rows * h // size) * w + cols * w // size


def statistics(
    layer: Layer, beta: torch.Tensor, size: int, partners: torch.Tensor | None
) -> dict[str, float]:
    """distance, entropy and (with the data's ``partners``) partner share of one layer's maps
    (see the module docstring)."""
    assert isinstance(layer.module, AttentionMaps)
    key_grid = layer.module.key_grid(size, size)
    queries = grid_centres(size, size, beta.device)  # (N, 2)
    keys = grid_centres(*key_grid, beta.device)  # (M, 2)
    distances = torch.cdist(queries, keys)  # (N, M)
    distance = (beta * distances).sum(-1).mean()
    positions = beta.shape[-1]
    entropy = -(beta * beta.clamp_min(1e-30).log()).sum(-1).mean() / math.log(max(positions, 2))
    found = {"distance": float(distance), "entropy": float(entropy)}
    if partners is not None:
        cells = partner_cells(partners.to(beta.device), size, key_grid)
        found["partner"] = float(beta.gather(-1, cells.expand(beta.shape[0], -1)[..., None]).mean())
    return found


def layer_statistics(
    layers: list[Layer],
    inputs: dict[str, torch.Tensor],
    partners: Callable[[int], torch.Tensor | None],
) -> dict[str, float]:
    """``distance_g16``, ``entropy_g16``, ``partner_g16``... for every layer that has maps;
    ``partners`` gives the data's declared partners at a feature size (or None).

    Images go through one at a time: a 64x64 layer's map is 64 MB per image.
    """
    found: dict[str, float] = {}
    for layer in layers:
        if not layer.has_maps or layer.name not in inputs:
            continue
        features = inputs[layer.name]
        totals: dict[str, float] = {}
        declared = partners(layer.size)
        for image in features.split(1):
            for key, value in statistics(
                layer, maps_of(layer, image), layer.size, declared
            ).items():
                totals[key] = totals.get(key, 0.0) + value / len(features)
        found.update({f"{key}_{layer.name}": value for key, value in totals.items()})
    return found


def auto_queries(images: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count, 2) points spread over each image's foreground (pixels that differ from the
    border colour, away from the border): farthest-point sampling from the foreground pixel
    nearest its centre. Without a clear figure on a ground (too few foreground pixels, or so
    many that the "foreground" is texture or noise), spread over the image's central half
    (never the corners, which are background in nearly every image)."""
    x = images.float() / 255
    resolution = images.shape[-1]
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
    background = border.median(dim=-1).values[:, :, None, None]
    foreground = (x - background).abs().amax(dim=1) > 0.2  # (B, R, R)
    ys, xs = torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1).float()
    margin = resolution // 8
    interior = ((xs >= margin) & (xs < resolution - margin) & (ys >= margin) & (ys < resolution - margin)).flatten()  # fmt: skip
    central = (
        (xs >= resolution // 4) & (xs < resolution - resolution // 4)
        & (ys >= resolution // 4) & (ys < resolution - resolution // 4)
    ).flatten()  # fmt: skip
    chosen = []
    for mask in foreground:
        inside = mask.flatten() & interior
        figure = count <= inside.sum() <= 0.6 * interior.sum()
        candidates = grid[inside] if figure else grid[central]
        centre = candidates.mean(dim=0, keepdim=True)
        points = [candidates[int(torch.cdist(candidates, centre).argmin())]]
        for _ in range(count - 1):
            distance = torch.cdist(candidates, torch.stack(points)).min(dim=1).values
            points.append(candidates[int(distance.argmax())])
        chosen.append(torch.stack(points))
    return torch.stack(chosen).long()


def query_maps(
    layer: Layer, beta: torch.Tensor, points: torch.Tensor, resolution: int
) -> torch.Tensor:
    """(B, Q, h, w): the rows of ``beta`` for pixel queries ``points`` (B, Q, 2) as x, y."""
    assert isinstance(layer.module, AttentionMaps)
    h, w = layer.module.key_grid(layer.size, layer.size)
    points = points.to(beta.device)
    cells = (points[..., 1] * layer.size // resolution) * layer.size + points[
        ..., 0
    ] * layer.size // resolution
    rows = beta.gather(1, cells[..., None].expand(-1, -1, beta.shape[-1]))  # (B, Q, M)
    return rows.reshape(beta.shape[0], -1, h, w)
