"""Image files: finding, decoding and writing them (PNG grids through torchvision)."""

from __future__ import annotations

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
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


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


def load_image(path: Path, resolution: int | None = None) -> torch.Tensor:
    """Decode to uint8 RGB (3, H, W); with ``resolution``, resize the shorter side to it and
    centre-crop."""
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        if resolution is not None:
            width, height = image.size
            scale = resolution / min(width, height)
            size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
            left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"Cannot read image {path}: {exc}. Remove or replace the file, or point to a folder "
            f"without it."
        ) from None


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> torch.Tensor:
    """Tile uint8 images (N, 3, H, W) into one PNG, ``columns`` wide, without padding; returns
    the grid (3, H', W')."""
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=columns, padding=0)
    image = Image.fromarray(np.ascontiguousarray(grid.permute(1, 2, 0).numpy()))
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))
    return grid
