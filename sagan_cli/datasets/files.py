"""``image-folder`` (PNG/JPEG files, recursively) and ``npz`` (a uint8 array file) sources."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagan_cli.api import DataSource, ImageSet, TensorImageSet
from sagan_cli.datasets.params import ImageFolderParams, NpzParams
from sagan_cli.errors import DataError, DataMissing
from sagan_cli.imagefiles import load_image, scan_images
from sagan_cli.model.arch import RESOLUTIONS


@lru_cache(maxsize=32)
def _file_sha256(path: Path, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    # keyed by ctime and inode too: a rewrite that restores size and mtime still changes them
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and SHA-256 of one file (hashed once per size and mtime)."""
    stat = path.stat()
    return {
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": _file_sha256(
            path.resolve(), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino
        ),
    }


@dataclass(frozen=True)
class FolderScan:
    """One walk of an image folder: its files in order, labels, class names and a fingerprint
    (count and a hash of the sorted (relative path, size, mtime) list: cheap, and it changes
    when any file is added, removed, replaced or rewritten)."""

    files: list[Path]
    labels: list[int]
    classes: list[str]
    fingerprint: dict[str, Any]


_SCANS: dict[tuple[str, bool], FolderScan] = {}  # one walk per folder per command


def forget_scans() -> None:
    """Start a new command: folders are walked again (their files may have changed)."""
    _SCANS.clear()


def scan_folder(root: Path, labels: bool, key: str) -> FolderScan:
    """The folder's ``FolderScan``, walked once per command (every source of the command, and
    every run of an ablation trained in its process, shares it); ``key`` names it in errors."""
    cached = _SCANS.get((str(root.resolve()), labels))
    if cached is not None:
        return cached
    if not root.is_dir():
        raise (DataError if root.exists() else DataMissing)(
            f"{key} = '{root}' is not a folder ({root.resolve()}). Point {key} at a folder of "
            f".png/.jpg images."
        )
    found = scan_images(root)
    if not found:
        raise DataError(
            f"{key} = '{root}' holds no .png, .jpg or .jpeg files (searched {root.resolve()} "
            f"recursively). Add images or point {key} elsewhere."
        )
    files = [path for path, _ in found]
    digest = hashlib.sha256()
    for path, stat in found:
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    fingerprint = {"files": len(files), "listing_sha256": digest.hexdigest()}
    if not labels:
        scan = FolderScan(files, [-1] * len(files), [], fingerprint)
    else:
        loose = [f for f in files if f.parent == root]
        if loose:
            raise DataError(
                f"data.labels = true takes classes from sub-folders of {root}, but "
                f"{loose[0].name} (and {len(loose) - 1} more) lie directly in it. Move them into "
                f"a class folder or set data.labels = false."
            )
        classes = sorted({f.relative_to(root).parts[0] for f in files})
        index = {name: i for i, name in enumerate(classes)}
        scan = FolderScan(
            files, [index[f.relative_to(root).parts[0]] for f in files], classes, fingerprint
        )
    _SCANS[(str(root.resolve()), labels)] = scan
    return scan


class FileImageSet(ImageSet):
    """Images decoded from files on access (for data sets too large to hold in memory)."""

    def __init__(self, files: list[Path], labels: list[int], resolution: int) -> None:
        self.files = files
        self.labels = labels
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image(self.files[index], self.resolution), self.labels[index]


class ImageFolderSource(DataSource):
    params: ImageFolderParams

    def _scan(self) -> FolderScan:
        return scan_folder(Path(self.params.path).expanduser(), self.params.labels, "data.path")

    @property
    def num_classes(self) -> int:
        return len(self._scan().classes) if self.params.labels else 0

    @property
    def class_names(self) -> list[str]:
        return self._scan().classes

    def check(self) -> None:
        load_image(self._scan().files[0], self.resolution)

    def fingerprint(self) -> dict[str, Any]:
        return self._scan().fingerprint

    def split(self, name: str) -> ImageSet:
        scan = self._scan()
        return FileImageSet(scan.files, scan.labels, self.resolution)


class NpzSource(DataSource):
    params: NpzParams

    def _path(self) -> Path:
        return Path(self.params.path).expanduser()

    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        path = self._path()
        if not path.is_file():
            raise (DataError if path.exists() else DataMissing)(
                f"data.path = '{self.params.path}': no such file ({path.resolve()}). Point "
                f"data.path at an .npz file of uint8 images (N, H, W, C)."
            )
        try:
            # allow_pickle stays off: an .npz must never run code from the file.
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if self.params.images_key not in keys:
                    raise DataError(
                        f"{path} has no array '{self.params.images_key}' (it has {keys}). Set "
                        f"data.images_key to the array holding the images."
                    )
                images = archive[self.params.images_key]
                labels = archive[self.params.labels_key] if self.params.labels_key in keys else None
        except DataError:
            raise
        except Exception as exc:  # empty, truncated, not a zip, object arrays (pickles)
            reason = str(exc) or type(exc).__name__
            if "allow_pickle" in reason:
                reason = "it holds Python objects (a pickled object array), which are never loaded"
            raise DataError(
                f"data.path = '{self.params.path}' is not a readable .npz file of uint8 arrays "
                f"({reason}). Save it with numpy.savez(path, images=uint8_array) where the array "
                f"is (N, H, W, C)."
            ) from None
        self._check_images(path, images)
        if labels is not None and (
            labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu"
        ):
            raise DataError(
                f"{path}: '{self.params.labels_key}' must be integers of shape ({images.shape[0]},), "
                f"got {labels.dtype} {labels.shape}."
            )
        return images, labels

    def _check_images(self, path: Path, images: np.ndarray) -> None:
        res = self.resolution
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                f"{path}: '{self.params.images_key}' must be uint8 (N, H, W, C) with C = 1 or 3, "
                f"got {images.dtype} {images.shape}."
            )
        if images.shape[1:3] != (res, res):
            raise DataError(
                f"{path} holds {images.shape[1]}x{images.shape[2]} images but data.resolution = "
                f"{res}. Set data.resolution = {images.shape[1]} if that is a supported size "
                f"({', '.join(map(str, RESOLUTIONS))}), or resize the images to {res}x{res}."
            )
        if images.shape[0] == 0:
            raise DataError(f"{path}: '{self.params.images_key}' holds no images.")

    @property
    def num_classes(self) -> int:
        _, labels = self._arrays()
        return 0 if labels is None else int(labels.max()) + 1

    def check(self) -> None:
        self._arrays()

    def fingerprint(self) -> dict[str, Any]:
        return file_fingerprint(self._path())

    def split(self, name: str) -> ImageSet:
        images, labels = self._arrays()
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
        if tensor.shape[1] == 1:
            tensor = tensor.expand(-1, 3, -1, -1)
        return TensorImageSet(
            tensor.contiguous(),
            None if labels is None else torch.from_numpy(labels.astype(np.int64)),
        )
