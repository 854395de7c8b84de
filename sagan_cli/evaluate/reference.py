"""Reference sets for FID, KID, precision/recall and density/coverage: a data source's split,
a folder or .npz of real images, or a published statistics file (mu, sigma)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from sagan_cli.api import DataSource
from sagan_cli.datasets.base import SPLITS, decode_all
from sagan_cli.datasets.files import ImageFolderSource, NpzSource
from sagan_cli.datasets.params import ImageFolderParams, NpzParams
from sagan_cli.errors import DataError, SaganError, describe_exception
from sagan_cli.evaluate.fidelity import LazyReference
from sagan_cli.imagefiles import IMAGE_SUFFIXES

REFERENCE_ORDER_SEED = 0


@dataclass
class Reference:
    """A reference set for FID/KID/PRC: lazily decoded images plus what identifies them, or a
    published statistics file (``images`` None)."""

    images: LazyReference | None
    key_identity: dict[str, Any]
    split: str
    description: dict[str, Any]
    stats_path: Path | None = None

    @property
    def size(self) -> int:
        return int(self.description.get("size", 0))


def reference_from(source: DataSource, split: str, count: int) -> Reference:
    """The first ``count`` images of a fixed shuffle of ``split`` (all of it if smaller or 0)."""
    if split not in source.splits:
        raise DataError(
            f"Data source '{source.name}' has no '{split}' split (it has {', '.join(source.splits)}). "
            f"Use --reference {source.splits[0]}, or --reference PATH for a folder or .npz of real images."
        )
    available = source.split_size(split)
    size = available if count == 0 else min(count, available)

    def load() -> torch.Tensor:
        images = source.split(split)
        order = torch.randperm(
            len(images), generator=torch.Generator().manual_seed(REFERENCE_ORDER_SEED)
        )
        # an ImageSet is a map-style dataset; Subset only indexes it
        subset: Subset[Any] = Subset(images, order[:size].tolist())  # type: ignore[arg-type]
        return decode_all(subset, workers=4).images

    description = {"source": source.name, "split": split, "size": size, "available": available}
    return Reference(LazyReference(size, load), source.identity(), split, description)


def reference_from_path(path: Path, resolution: int, count: int) -> Reference:
    """Real images from a folder (resized and centre-cropped) or an .npz file of images, or a
    statistics file (an .npz with ``mu`` and ``sigma``)."""
    path = path.expanduser()
    if path.suffix == ".npz" and path.is_file() and npz_holds(path) == "statistics":
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return Reference(
            None,
            {"stats_sha256": digest},
            "stats",
            {"source": str(path.resolve()), "split": "stats", "sha256": digest},
            stats_path=path,
        )
    if path.suffix == ".npz":
        source: DataSource = NpzSource("npz", NpzParams(path=str(path)), resolution)
    elif path.is_dir():
        source = ImageFolderSource("image-folder", ImageFolderParams(path=str(path)), resolution)
    else:
        raise DataError(
            f"--reference {path}: not a folder of images or an .npz file. Use train, test, a folder "
            f"of {'/'.join(IMAGE_SUFFIXES)} files, or an .npz of uint8 images."
        )
    source.check()
    reference = reference_from(source, "train", count)
    reference.description = {
        **reference.description,
        "source": str(path.resolve()),
        "split": "path",
    }
    return reference


STATS_FORMAT = (
    "a statistics file holds 'mu' (D,) and 'sigma' (D, D) of one feature extractor, and "
    "optionally 'features' (N, D) (TTUR's, clean-fid's and `sagan eval --export-stats`'s "
    "files do); an images file holds uint8 images (N, H, W, 3) under 'images'"
)


def npz_holds(path: Path) -> str:
    """What an .npz reference holds: "statistics" (mu, sigma) or "images"; anything else is
    one paragraph naming both formats."""
    where = f"--reference {path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: (archive[key].dtype, archive[key].ndim) for key in archive.files}
    except Exception as exc:
        raise DataError(
            f"{where} is not a readable .npz file ({describe_exception(exc, 120)}): {STATS_FORMAT}."
        ) from None
    if {"mu", "sigma"} & set(arrays):
        return "statistics"
    if any(dtype == np.uint8 and ndim == 4 for dtype, ndim in arrays.values()):
        return "images"
    found = ", ".join(f"{key} ({dtype}, {ndim}-d)" for key, (dtype, ndim) in arrays.items())
    raise DataError(
        f"{where} holds neither statistics nor images (its arrays: {found or 'none'}): "
        f"{STATS_FORMAT}. Rename the arrays or give another file."
    )


def reference_for(choice: str, count: int, resolution: int, source: DataSource | None) -> Reference:
    """``train``/``test`` of ``source``, or a folder or .npz path of real images."""
    if choice in SPLITS:
        if source is None:
            raise SaganError(
                f"--reference {choice} names a split of a recipe's data: add --recipe RECIPE."
            )
        return reference_from(source, choice, count)
    return reference_from_path(Path(choice), resolution, count)
