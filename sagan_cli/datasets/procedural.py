"""Data rendered from a seed (``shapes``, ``glyphs``): the split plumbing they share.

A split is rendered in chunks of ``CHUNK`` images, each from its own generator
seeded by (name, data seed, split, chunk index), so image i does not depend on
the split's size, the machine or how the images are consumed.
"""

from __future__ import annotations

import hashlib
import math
from abc import abstractmethod
from typing import Any

import torch

from sagan_cli.api import DataSource, ImageSet, TensorImageSet
from sagan_cli.datasets.base import SPLITS

CHUNK = 64  # images per generator seed


def chunk_generator(name: str, seed: int, split: str, chunk: int) -> torch.Generator:
    """The generator of one chunk of one split: a function of these four values only."""
    digest = hashlib.sha256(f"{name}:{seed}:{split}:{chunk}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class ProceduralSource(DataSource):
    """A source whose params have ``num_images``, ``test_images`` and ``seed``; subclasses say
    how one chunk is rendered."""

    params: Any
    family: str  # seeds the chunk generators: two families never share images

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def split_size(self, name: str) -> int:
        return self.params.num_images if name == "train" else self.params.test_images

    @abstractmethod
    def render_chunk(
        self, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``count`` uint8 images (count, 3, R, R) and their labels (None: unlabelled)."""

    def split(self, name: str) -> ImageSet:
        count = self.split_size(name)
        rendered = [
            self.render_chunk(CHUNK, chunk_generator(self.family, self.params.seed, name, chunk))
            for chunk in range(math.ceil(count / CHUNK))
        ]
        images = torch.cat([chunk for chunk, _ in rendered])[:count]
        labels = [labels for _, labels in rendered if labels is not None]
        return TensorImageSet(images, torch.cat(labels)[:count] if labels else None)
