"""``cifar10`` and ``cifar100`` through torchvision, from a local root; downloads only when allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagan_cli.api import DataSource, ImageSet, TensorImageSet
from sagan_cli.datasets.base import SPLITS
from sagan_cli.datasets.params import CifarParams
from sagan_cli.errors import DataError, DataMissing

ARCHIVE_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


class CifarSource(DataSource):
    params: CifarParams

    def _dataset_class(self) -> Any:
        from torchvision.datasets import CIFAR10, CIFAR100

        return CIFAR10 if self.name == "cifar10" else CIFAR100

    @property
    def num_classes(self) -> int:
        return 10 if self.name == "cifar10" else 100

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def _root(self) -> Path:
        return Path(self.params.root).expanduser()

    def check(self) -> None:
        if self.resolution != 32:
            raise DataError(
                f"{self.name} images are 32x32 but data.resolution = {self.resolution}. Set "
                f"data.resolution = 32."
            )
        cls = self._dataset_class()
        folder = self._root() / cls.base_folder
        expected = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        missing = [name for name in expected if not (folder / name).is_file()]
        if not missing:
            return
        if self.params.download:
            try:
                cls(str(self._root()), train=True, download=True)
            except Exception as exc:
                raise DataError(
                    f"Downloading {self.name} into {self._root()} failed ({exc}). Download "
                    f"{ARCHIVE_URLS[self.name]} yourself and extract it there."
                ) from None
            return
        raise DataMissing(
            f"{self.name} files not found: {folder} lacks {', '.join(missing)}. Download "
            f"{ARCHIVE_URLS[self.name]}, extract it into {self._root()} (creating "
            f"{folder}), or set data.download = true to let torchvision fetch it, or point "
            f"data.root at an existing copy."
        )

    def split(self, name: str) -> ImageSet:
        self.check()
        try:
            dataset = self._dataset_class()(
                str(self._root()), train=name == "train", download=False
            )
        except RuntimeError as exc:
            raise DataError(
                f"{self.name} under {self._root()} failed torchvision's integrity check ({exc}). "
                f"The files are corrupt or from a partial download: delete "
                f"{self._root() / self._dataset_class().base_folder} and extract the archive again."
            ) from None
        images = (
            torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
        )
        return TensorImageSet(images, torch.tensor(dataset.targets, dtype=torch.long))
