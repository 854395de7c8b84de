"""FID, IS and KID through ``torch_fidelity.calculate_metrics``, with cached reference features.

Images go in exactly as torch-fidelity expects them: uint8 RGB tensors at the
generator's resolution (its InceptionV3 resizes to 299 internally, as the TF
reference does). Generated images are a tensor; the reference is a data source
split, wrapped so that it is only decoded when its features are not cached.

Reference cache: one folder per key under the cache root. The key hashes a
format version, the data source's identity (name, parameters, resolution and a
fingerprint of its files' content), the split, the image count, the extractor
and its weights' SHA-256. One process fills an entry at a time (a file lock);
``meta.json`` is written last, so a folder without it (a crash mid-way) is
wiped and recomputed, and so is one whose files fail to load, with a notice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch.utils.data import Dataset
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_fid import KEY_METRIC_FID
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD

from sagan_cli.evaluate.weights import EXTRACTOR, InceptionWeights
from sagan_cli.fileio import atomic_write_json

CACHE_FORMAT = 2  # 2: data identities carry a content fingerprint
CACHE_ENV = "SAGAN_CACHE_DIR"
LOCK_NAME = ".lock"
METRIC_FLAGS = {"fid": "fid", "is": "isc", "kid": "kid"}
RESULT_KEYS = {
    KEY_METRIC_FID: "fid",
    KEY_METRIC_ISC_MEAN: "is_mean",
    KEY_METRIC_ISC_STD: "is_std",
    KEY_METRIC_KID_MEAN: "kid_mean",
    KEY_METRIC_KID_STD: "kid_std",
}


def kid_subset_size(generated: int, reference: int) -> int:
    """torch-fidelity's KID subset size, capped by the smaller set."""
    return min(int(DEFAULTS["kid_subset_size"]), generated, reference)


def _notice(text: str) -> None:
    sys.stderr.write(f"notice: {text}\n")


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

    def __init__(self, root: Path, notify: Callable[[str], None] = _notice) -> None:
        self.root = root
        self.notify = notify

    @contextlib.contextmanager
    def filling(self, key: ReferenceKey) -> Iterator[Path]:
        """The entry's folder, held by this process while it reads or fills it.

        Another process (an ``ablate --jobs`` worker) waits for the lock instead of
        wiping an entry that is being written. An entry whose files do not load is
        discarded and recomputed.
        """
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / LOCK_NAME)):
            if self.is_complete(key) and not self._loads(key):
                self.notify(
                    f"the cached reference features in {self.folder(key)} are unreadable; "
                    f"they are discarded and recomputed"
                )
                self.discard(key)
            yield self.prepare(key)

    def _loads(self, key: ReferenceKey) -> bool:
        try:
            json.loads((self.folder(key) / "meta.json").read_text())
            for path in self.folder(key).glob("*.pt"):
                # torch-fidelity stores numpy statistics here and reads them the same way
                torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # any unreadable entry (torn, truncated, garbage) is recomputed
            return False
        return True

    def folder(self, key: ReferenceKey) -> Path:
        return self.root / key.digest()

    def is_complete(self, key: ReferenceKey) -> bool:
        return (self.folder(key) / "meta.json").is_file()

    def prepare(self, key: ReferenceKey) -> Path:
        if not self.is_complete(key):
            self.discard(key)  # left half-written by an interrupted evaluation
        return self.folder(key)

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
        """Empty the entry, keeping its lock file (deleting a held lock would let a second
        process take a fresh one)."""
        for path in self.folder(key).iterdir():
            if path.name == LOCK_NAME:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


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
        with cache.filling(key) as folder:
            kwargs.update(cache=True, cache_root=str(folder), input2_cache_name="reference")
            raw = torch_fidelity.calculate_metrics(**kwargs)
            cache.commit(key)
    else:
        raw = torch_fidelity.calculate_metrics(**kwargs)
    return {RESULT_KEYS[k]: float(v) for k, v in raw.items() if k in RESULT_KEYS}
