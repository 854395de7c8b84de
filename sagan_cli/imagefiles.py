"""Image files: finding, decoding and writing them (PNG grids through torchvision)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sagan_cli.errors import DataError
from sagan_cli.fileio import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LOSSY_SUFFIXES = (".jpg", ".jpeg")


def find_images(root: Path) -> list[Path]:
    """Every .png/.jpg/.jpeg file under ``root``, recursively, in a stable order."""
    return [path for path, _ in scan_images(root)]


def scan_images(root: Path) -> list[tuple[Path, os.stat_result]]:
    """Every image file under ``root`` with its stat, in ``find_images``' order: one
    directory walk and one stat per file (an ImageNet folder has 1.28M of them)."""
    found: list[tuple[Path, os.stat_result]] = []
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(
                    follow_symlinks=False
                ):  # as Path.rglob: links to folders are not followed
                    pending.append(Path(entry.path))
                elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                    found.append((Path(entry.path), entry.stat()))
    found.sort(key=lambda item: item[0])
    return found


def lossy_share(files: list[Path]) -> float:
    """The fraction of ``files`` stored with lossy compression (JPEG)."""
    return sum(p.suffix.lower() in LOSSY_SUFFIXES for p in files) / max(1, len(files))


def lossy_warning(files: list[Path], what: str) -> str | None:
    """torch-fidelity's advice: JPEG artefacts shift FID; say so when scoring JPEG files."""
    share = lossy_share(files)
    if share == 0:
        return None
    return (
        f"{share:.0%} of {what} are JPEG files: lossy compression artefacts change Inception "
        f"features and so FID/KID; compare only with numbers computed from the same files, or "
        f"use PNG."
    )


CROP_RULE = (
    "RGB; the shorter side resized to the resolution (PIL bicubic, reducing_gap 3), then the "
    "centre square cropped"
)


def fit(image: Image.Image, resolution: int | None) -> torch.Tensor:
    """A PIL image as uint8 RGB (3, R, R) by ``CROP_RULE`` (every source that decodes images
    uses this one function, so prepared data equals the files it came from)."""
    image = image.convert("RGB")
    if resolution is not None:
        width, height = image.size
        scale = resolution / min(width, height)
        size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def load_image(path: Path, resolution: int | None = None) -> torch.Tensor:
    """Decode a file to uint8 RGB (3, H, W); with ``resolution``, by ``CROP_RULE``."""
    try:
        with Image.open(path) as opened:
            return fit(opened, resolution)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"Cannot read image {path}: {exc}. Remove or replace the file, or point to a folder "
            f"without it."
        ) from None


GRID_TILE_MIN = 64  # pixels: smaller images are enlarged (nearest: each pixel stays a square)
GRID_PADDING = 2  # pixels of mid grey between tiles, so neighbours do not merge


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> torch.Tensor:
    """Tile uint8 images (N, 3, H, W) into one PNG, ``columns`` wide: tiles enlarged by a whole
    factor to at least ``GRID_TILE_MIN`` pixels, separated by grey lines; returns the grid
    (3, H', W')."""
    from torchvision.utils import make_grid

    factor = max(1, -(-GRID_TILE_MIN // images.shape[-1]))
    if factor > 1:
        images = images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    grid = make_grid(images, nrow=columns, padding=GRID_PADDING, pad_value=128)
    image = Image.fromarray(np.ascontiguousarray(grid.permute(1, 2, 0).numpy()))
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))
    return grid
