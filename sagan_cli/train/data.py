"""Real batches in a seeded order that a resumed run continues exactly.

The order is a pure function of (seed, position): an endless concatenation of
per-epoch permutations, and each batch's flips come from a generator seeded by
its position. A checkpoint therefore only needs ``position`` (images consumed).

Data that fits is decoded once and kept on the training device as uint8
(converted and flipped there); otherwise a DataLoader with workers decodes each
batch from the same index stream.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler, Subset

from sagan_cli.datasets.base import ImageSet, TensorImageSet


def _seeded(*parts: object) -> torch.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def batch_indices(size: int, seed: int, position: int, count: int) -> torch.Tensor:
    """Indices of the ``count`` images starting at stream ``position``."""
    out = []
    while count > 0:
        epoch, offset = divmod(position, size)
        order = torch.randperm(size, generator=_seeded("order", seed, epoch))
        take = min(count, size - offset)
        out.append(order[offset : offset + take])
        position += take
        count -= take
    return torch.cat(out)


def flip_mask(seed: int, position: int, count: int) -> torch.Tensor:
    return torch.rand(count, generator=_seeded("flip", seed, position)) < 0.5


class _StreamSampler(Sampler[list[int]]):
    def __init__(self, size: int, batch_size: int, seed: int, position: int) -> None:
        self.size, self.batch_size, self.seed, self.position = size, batch_size, seed, position

    def __iter__(self) -> Iterator[list[int]]:
        position = self.position
        while True:
            yield batch_indices(self.size, self.seed, position, self.batch_size).tolist()
            position += self.batch_size


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def decode_all(
    images: ImageSet | Subset,
    workers: int,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> TensorImageSet:
    """Decode a whole split into one uint8 tensor (with worker processes for file sources)."""
    if isinstance(images, TensorImageSet):
        return images
    if isinstance(images, Subset) and isinstance(images.dataset, TensorImageSet):
        index = torch.as_tensor(images.indices)
        labels = images.dataset.labels
        return TensorImageSet(
            images.dataset.images[index], None if labels is None else labels[index]
        )
    workers = min(workers, os.cpu_count() or 1)
    loader = DataLoader(images, batch_size=256, num_workers=workers, shuffle=False)
    chunks: list[torch.Tensor] = []
    label_chunks: list[torch.Tensor] = []
    for batch, batch_labels in loader:
        chunks.append(batch)
        label_chunks.append(batch_labels)
        on_progress(sum(len(c) for c in chunks), len(images))
    all_labels = torch.cat(label_chunks)
    return TensorImageSet(torch.cat(chunks), None if (all_labels < 0).all() else all_labels)


class BatchStream:
    """Endless training batches: (images in [-1, 1], labels or None) on ``device``."""

    def __init__(
        self,
        images: ImageSet,
        batch_size: int,
        seed: int,
        device: torch.device,
        hflip: bool,
        position: int = 0,
        resident_limit: int = 0,
        workers: int | None = None,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self.size = len(images)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.hflip = hflip
        self.position = position
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers
        first, _ = images[0]
        self.resident = self.size * first.numel() <= resident_limit
        if self.resident:
            decoded = decode_all(images, self.workers, on_progress)
            self.images = decoded.images.to(device)
            self.labels = None if decoded.labels is None else decoded.labels.to(device)
            self._loader: Iterator | None = None
        else:
            self._source = images
            self._loader = None

    def _stream_batches(self) -> Iterator:
        loader = DataLoader(
            self._source,
            batch_sampler=_StreamSampler(self.size, self.batch_size, self.seed, self.position),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.workers > 0,
        )
        return iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.resident:
            index = batch_indices(self.size, self.seed, self.position, self.batch_size).to(
                self.device
            )
            images = self.images[index]
            labels = None if self.labels is None else self.labels[index]
        else:
            if self._loader is None:
                self._loader = self._stream_batches()
            images, labels = next(self._loader)
            images = images.to(self.device, non_blocking=True)
            labels = None if (labels < 0).all() else labels.to(self.device, non_blocking=True)
        images = to_unit_range(images)
        if self.hflip:
            flip = flip_mask(self.seed, self.position, self.batch_size).to(self.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        self.position += self.batch_size
        return images, labels
