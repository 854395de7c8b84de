"""Random images with a recipe's shape: the training step timed without any data set."""

from __future__ import annotations

import torch

from sagan_cli.api import DataSource, TensorImageSet


class SyntheticSource(DataSource):
    """Random uint8 images with the recipe's shape: the training step without any data set."""

    def __init__(self, resolution: int, num_classes: int, count: int) -> None:
        super().__init__("synthetic", None, resolution)
        self._classes = num_classes
        self._count = count

    @property
    def num_classes(self) -> int:
        return self._classes

    def split(self, name: str) -> TensorImageSet:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(
            0,
            256,
            (self._count, 3, self.resolution, self.resolution),
            dtype=torch.uint8,
            generator=generator,
        )
        labels = torch.randint(max(self._classes, 1), (self._count,), generator=generator)
        return TensorImageSet(images, labels if self._classes else None)
