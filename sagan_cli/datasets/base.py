"""What every built-in data source shares: split names and decoding a split into memory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from sagan_cli.api import ImageSet, TensorImageSet
from sagan_cli.errors import SaganError

SPLITS = ("train", "test")


def from_workers(batches: Iterator[Any]) -> Iterator[Any]:
    """Batches from a DataLoader; a user error raised in a worker keeps its own message.

    PyTorch re-raises a worker's exception with the worker's traceback pasted into
    the message; for our errors (an unreadable file) only the last line says
    anything to the user.
    """
    while True:
        try:
            yield next(batches)
        except StopIteration:
            return
        except SaganError as exc:
            text = str(exc)
            if "Traceback" in text:
                last = text.strip().splitlines()[-1]
                text = last.split(": ", 1)[1] if ": " in last else last
            raise type(exc)(text) from None


_DECODED: dict[str, TensorImageSet] = {}  # the split decoded last in this process, by key


def decode_all(
    images: ImageSet | Subset,
    workers: int,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    key: str | None = None,
) -> TensorImageSet:
    """Decode a whole split into one uint8 tensor (with worker processes for file sources).

    ``key`` (the source's identity and split) keeps the result for the next call in this
    process with the same key: the runs of an ablation trained one after another in one
    process decode their data once.
    """
    if key is not None and key in _DECODED:
        return _DECODED[key]
    decoded = _decode(images, workers, on_progress)
    if key is not None and decoded is not images:
        _DECODED.clear()  # one split at a time: what the next run most likely needs
        _DECODED[key] = decoded
    return decoded


def _decode(
    images: ImageSet | Subset, workers: int, on_progress: Callable[[int, int], None]
) -> TensorImageSet:
    from sagan_cli.datasets.prepared import PreparedImageSet

    if isinstance(images, TensorImageSet):
        return images
    if isinstance(images, PreparedImageSet):  # already decoded: one copy into memory
        return images.to_tensor_set()
    if isinstance(images, Subset) and isinstance(images.dataset, TensorImageSet):
        index = torch.as_tensor(images.indices)
        labels = images.dataset.labels
        return TensorImageSet(
            images.dataset.images[index], None if labels is None else labels[index]
        )
    workers = min(workers, os.cpu_count() or 1)
    loader = DataLoader(
        images,  # type: ignore[arg-type]
        batch_size=256,
        num_workers=workers,
        shuffle=False,
        generator=loader_generator(),
    )
    chunks: list[torch.Tensor] = []
    label_chunks: list[torch.Tensor] = []
    for batch, batch_labels in from_workers(iter(loader)):
        chunks.append(batch)
        label_chunks.append(batch_labels)
        on_progress(sum(len(c) for c in chunks), len(images))
    all_labels = torch.cat(label_chunks)
    return TensorImageSet(torch.cat(chunks), None if (all_labels < 0).all() else all_labels)


def loader_generator() -> torch.Generator:
    """A DataLoader's own generator: without one, every iteration over it draws its workers'
    base seed from torch's global RNG, so a resumed run (which opens its data again) would not
    continue the global RNG as the uninterrupted run does."""
    return torch.Generator().manual_seed(0)
