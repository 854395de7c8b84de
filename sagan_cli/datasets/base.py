"""The data-source contract every data plugin implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch.utils.data import Dataset

SPLITS = ("train", "test")


class ImageSet(Dataset):
    """A split of a data source: item i is (uint8 image (3, R, R), integer label; -1 if none)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


class TensorImageSet(ImageSet):
    """Images already decoded into one uint8 tensor (N, 3, R, R)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = -1 if self.labels is None else int(self.labels[index])
        return self.images[index], label


class DataSource(ABC):
    """Real images at one resolution, by split, with labels when the data has classes.

    ``check`` is cheap and runs before any work starts (files exist, shapes fit);
    ``split`` may be slow (it may decode or render images).
    """

    def __init__(self, name: str, params: Any, resolution: int) -> None:
        self.name = name
        self.params = params
        self.resolution = resolution

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of classes; 0 when the data is unlabelled."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train",)

    def check(self) -> None:  # noqa: B027 - a source with nothing to check keeps this no-op
        """Raise ``DataError`` if the data cannot be delivered as configured."""

    @abstractmethod
    def split(self, name: str) -> ImageSet:
        """The images of split ``name`` (one of ``splits``)."""

    def split_size(self, name: str) -> int:
        """Images in split ``name``; override when counting is cheaper than ``split``."""
        return len(self.split(name))

    def identity(self) -> dict[str, Any]:
        """What determines the images: keys the real-statistics cache."""
        return {
            "source": self.name,
            "params": self.params.model_dump(mode="json"),
            "resolution": self.resolution,
        }

    def structural_score(self, images: torch.Tensor) -> dict[str, float] | None:
        """Scores of uint8 samples (B, 3, R, R) needing no Inception net, or None.

        Lower is better and real data scores 0; the headline value is ``structure``.
        """
        return None
