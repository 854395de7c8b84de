"""FID, IS and KID through ``torch_fidelity.calculate_metrics``, with cached reference features.

Images go in exactly as torch-fidelity expects them: uint8 RGB tensors at the
generator's resolution (its InceptionV3 resizes to 299 internally, as the TF
reference does). Generated images are a tensor; the reference is a data source
split, wrapped so that it is only decoded when its features are not cached.

Reference cache: one folder per key under the cache root. The key hashes a
format version, the data source's identity (name, parameters, resolution), the
split, the image count, the extractor and its weights' SHA-256. torch-fidelity
writes its feature files atomically inside the folder; ``meta.json`` is
written last, so a folder without it (a crash mid-way) is wiped and recomputed,
and so is one whose files fail to load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from sagan_cli.evaluate.weights import EXTRACTOR, InceptionWeights
from sagan_cli.fileio import atomic_write_json

CACHE_FORMAT = 1
CACHE_ENV = "SAGAN_CACHE_DIR"
METRIC_FLAGS = {"fid": "fid", "is": "isc", "kid": "kid"}
RESULT_KEYS = {
    "frechet_inception_distance": "fid",
    "inception_score_mean": "is_mean",
    "inception_score_std": "is_std",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
}


def kid_subset_size(generated: int, reference: int) -> int:
    """torch-fidelity's KID subset size (1000), capped by the smaller set."""
    return min(1000, generated, reference)


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, "~/.cache/sagan-cli/reference-stats")).expanduser()


class Images(Dataset):
    """uint8 images (N, 3, H, W) as torch-fidelity's input: item i is the image tensor alone."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class LazyReference(Dataset):
    """Reference images, materialised only when torch-fidelity actually reads them."""

    def __init__(self, count: int, load: Callable[[], torch.Tensor]) -> None:
        self.count = count
        self._load = load
        self._images: torch.Tensor | None = None
        self.loads = 0  # how often the reference had to be decoded (tests watch this)

    def images(self) -> torch.Tensor:
        if self._images is None:
            self.loads += 1
            self._images = self._load()
        return self._images

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images()[index]


@dataclass(frozen=True)
class ReferenceKey:
    """Everything that determines a reference set's features."""

    identity: dict[str, Any]
    split: str
    count: int
    weights_sha256: str

    def digest(self) -> str:
        payload = {
            "format": CACHE_FORMAT,
            "identity": self.identity,
            "split": self.split,
            "count": self.count,
            "extractor": EXTRACTOR,
            "weights": self.weights_sha256,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class ReferenceCache:
    """A folder per reference key; complete only when its ``meta.json`` exists."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, key: ReferenceKey) -> Path:
        return self.root / key.digest()

    def is_complete(self, key: ReferenceKey) -> bool:
        return (self.folder(key) / "meta.json").is_file()

    def prepare(self, key: ReferenceKey) -> Path:
        folder = self.folder(key)
        if folder.exists() and not self.is_complete(key):
            shutil.rmtree(folder)  # left half-written by an interrupted evaluation
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def commit(self, key: ReferenceKey) -> None:
        atomic_write_json(
            self.folder(key) / "meta.json",
            {
                "format": CACHE_FORMAT,
                "identity": key.identity,
                "split": key.split,
                "count": key.count,
                "extractor": EXTRACTOR,
                "weights_sha256": key.weights_sha256,
            },
        )

    def discard(self, key: ReferenceKey) -> None:
        shutil.rmtree(self.folder(key), ignore_errors=True)


def calculate(
    generated: torch.Tensor,
    metrics: list[str],
    weights: InceptionWeights,
    device: torch.device,
    batch_size: int,
    reference: Dataset | None = None,
    reference_cache: tuple[ReferenceCache, ReferenceKey] | None = None,
) -> dict[str, float]:
    """Our metric names (fid, is_mean, is_std, kid_mean, kid_std) for uint8 ``generated``."""
    import torch_fidelity

    needs_reference = any(m in ("fid", "kid") for m in metrics)
    if needs_reference and reference is None:
        raise ValueError("FID and KID need a reference set")
    kwargs: dict[str, Any] = {
        "input1": Images(generated),
        "cuda": device.type == "cuda",
        "batch_size": batch_size,
        "feature_extractor_weights_path": str(weights.path),
        "verbose": False,
        "save_cpu_ram": True,  # in-memory tensors: worker processes would only copy them
        "cache": False,
        **{METRIC_FLAGS[m]: True for m in metrics},
    }
    if needs_reference:
        assert reference is not None
        kwargs["input2"] = reference
        kwargs["kid_subset_size"] = kid_subset_size(len(generated), len(reference))  # type: ignore[arg-type]
    if needs_reference and reference_cache is not None:
        cache, key = reference_cache
        kwargs.update(cache=True, cache_root=str(cache.prepare(key)), input2_cache_name="reference")
        try:
            raw = torch_fidelity.calculate_metrics(**kwargs)
        except (RuntimeError, EOFError, OSError, ValueError) as first_error:
            if not cache.is_complete(key):
                raise
            cache.discard(key)  # a cache file that fails to load: recompute once
            kwargs["cache_root"] = str(cache.prepare(key))
            try:
                raw = torch_fidelity.calculate_metrics(**kwargs)
            except Exception:
                raise first_error from None
        cache.commit(key)
    else:
        raw = torch_fidelity.calculate_metrics(**kwargs)
    return {RESULT_KEYS[k]: float(v) for k, v in raw.items() if k in RESULT_KEYS}
