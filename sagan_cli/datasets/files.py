"""``image-folder`` (PNG/JPEG files, recursively) and ``npz`` (a uint8 array file) sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from sagan_cli.datasets.base import DataSource, ImageSet, TensorImageSet
from sagan_cli.errors import DataError
from sagan_cli.plugins import PluginParams

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolderParams(PluginParams):
    path: str = Field(description="folder searched recursively for .png/.jpg/.jpeg files")
    labels: bool = Field(False, description="use the first-level sub-folders as class labels")


class NpzParams(PluginParams):
    path: str = Field(description=".npz file holding uint8 images (N, H, W, C)")
    images_key: str = Field("images", description="array holding the images")
    labels_key: str = Field("labels", description="array of integer labels, used when present")


def find_images(root: Path) -> list[Path]:
    """Every .png/.jpg/.jpeg file under ``root``, recursively, in a stable order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


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
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(
            f"Cannot read image {path}: {exc}. Remove or replace the file, or point to a folder "
            f"without it."
        ) from None


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

    def _root(self) -> Path:
        return Path(self.params.path).expanduser()

    def _scan(self) -> tuple[list[Path], list[int], list[str]]:
        root = self._root()
        if not root.is_dir():
            raise DataError(
                f"data.path = '{self.params.path}' is not a folder ({root.resolve()}). Point "
                f"data.path at a folder of .png/.jpg images."
            )
        files = find_images(root)
        if not files:
            raise DataError(
                f"data.path = '{self.params.path}' holds no .png, .jpg or .jpeg files (searched "
                f"{root.resolve()} recursively). Add images or point data.path elsewhere."
            )
        if not self.params.labels:
            return files, [-1] * len(files), []
        loose = [f for f in files if f.parent == root]
        if loose:
            raise DataError(
                f"data.labels = true takes classes from sub-folders of {root}, but {loose[0].name} "
                f"(and {len(loose) - 1} more) lie directly in it. Move them into a class folder "
                f"or set data.labels = false."
            )
        classes = sorted({f.relative_to(root).parts[0] for f in files})
        index = {name: i for i, name in enumerate(classes)}
        return files, [index[f.relative_to(root).parts[0]] for f in files], classes

    @property
    def num_classes(self) -> int:
        return len(self._scan()[2]) if self.params.labels else 0

    def check(self) -> None:
        files, _, _ = self._scan()
        load_image(files[0], self.resolution)

    def split(self, name: str) -> ImageSet:
        files, labels, _ = self._scan()
        return FileImageSet(files, labels, self.resolution)


class NpzSource(DataSource):
    params: NpzParams

    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        path = Path(self.params.path).expanduser()
        try:
            archive = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(
                f"data.path = '{self.params.path}': no such file ({path.resolve()}). Point "
                f"data.path at an .npz file of uint8 images (N, H, W, C)."
            ) from None
        except (OSError, ValueError) as exc:
            raise DataError(
                f"data.path = '{self.params.path}' is not a readable .npz file: {exc}."
            ) from None
        with archive:
            keys = list(archive.keys())
            if self.params.images_key not in keys:
                raise DataError(
                    f"{path} has no array '{self.params.images_key}' (it has {keys}). Set "
                    f"data.images_key to the array holding the images."
                )
            images = archive[self.params.images_key]
            labels = archive[self.params.labels_key] if self.params.labels_key in keys else None
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
                f"(32, 64, 128), or resize the images to {res}x{res}."
            )
        if images.shape[0] == 0:
            raise DataError(f"{path}: '{self.params.images_key}' holds no images.")

    @property
    def num_classes(self) -> int:
        _, labels = self._arrays()
        return 0 if labels is None else int(labels.max()) + 1

    def check(self) -> None:
        self._arrays()

    def split(self, name: str) -> ImageSet:
        images, labels = self._arrays()
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
        if tensor.shape[1] == 1:
            tensor = tensor.expand(-1, 3, -1, -1)
        return TensorImageSet(
            tensor.contiguous(),
            None if labels is None else torch.from_numpy(labels.astype(np.int64)),
        )
