"""``prepared``: a data set decoded once by ``sagan data prepare``, memory-mapped in training.

    OUT/prepared.json          the manifest: source, resolution, crop rule, splits
    OUT/train-00000.npy ...    uint8 (n, 3, R, R) shards, in the source's order
    OUT/train-labels.npy       int64 (N,) labels (-1: none)

Items come in the source's order, decoded by the same function (``imagefiles.fit``),
so a run on prepared data is bit-identical to the same run on the source. Shards
are opened as read-only memory maps: nothing is decoded, and a set larger than
memory is read as batches need it. ``check`` compares every shard with the
manifest (size, then its SHA-256 once per file version: the result is remembered
in the cache folder, keyed by path, size and times).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sagan_cli.api import DataSource, ImageSet, TensorImageSet
from sagan_cli.datasets.params import PreparedParams
from sagan_cli.errors import DataError, DataMissing
from sagan_cli.fileio import atomic_write_json, cache_dir

MANIFEST = "prepared.json"
FORMAT = "sagan-prepared-1"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path, key: str = "data.path") -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        partial = (folder / ".progress.json").is_file()
        raise (DataError if partial else DataMissing)(
            f"{key} = '{folder}' holds no prepared data set ({MANIFEST} is missing"
            + ("; a `sagan data prepare` into it was stopped before it finished" if partial else "")
            + "). Run `sagan data prepare RECIPE "
            + f"{folder}` (it resumes where it stopped), or point {key} at a prepared folder."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); prepare the data set again.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(
            f"{path} is not a manifest of `sagan data prepare` (format {FORMAT}); prepare the "
            f"data set again into an empty folder."
        )
    return manifest


def _verified_record() -> Path:
    return cache_dir() / "prepared-verified.json"


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}"


def remember_verified(path: Path, sha256: str) -> None:
    """``path`` (as it is now) has this SHA-256: ``verify_file`` need not hash it again."""
    record = _verified_record()
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known[_stamp(path)] = sha256
    with contextlib.suppress(OSError):  # a read-only cache only costs a second hash next time
        atomic_write_json(record, known)


def verify_file(path: Path, expected_bytes: int, expected_sha256: str, fix: str) -> None:
    """A shard or label file is the one the manifest describes: its size always, its SHA-256
    once per version of the file (remembered in the cache folder)."""
    if not path.is_file():
        raise DataError(f"{path} is missing: the prepared data set is incomplete. {fix}")
    size = path.stat().st_size
    if size != expected_bytes:
        raise DataError(
            f"{path} has {size:,} bytes but the manifest says {expected_bytes:,}: the file is "
            f"truncated or was replaced. {fix}"
        )
    record = _verified_record()
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    stamp = _stamp(path)
    if known.get(stamp) == expected_sha256:
        return
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise DataError(
            f"{path} does not match its manifest (SHA-256 {actual[:12]}..., expected "
            f"{expected_sha256[:12]}...): the file changed after it was prepared. {fix}"
        )
    remember_verified(path, actual)


class PreparedImageSet(ImageSet):
    """Items of a prepared split from its memory-mapped shards (opened lazily, per process)."""

    def __init__(self, shards: list[Path], counts: list[int], labels: np.ndarray | None) -> None:
        self.shards = shards
        self.starts = [0, *np.cumsum(counts).tolist()]
        self.labels = labels
        self._maps: list[np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the maps
        return {**self.__dict__, "_maps": None}

    def _opened(self) -> list[np.ndarray]:
        if self._maps is None:
            self._maps = [np.load(path, mmap_mode="r") for path in self.shards]
        return self._maps

    def __len__(self) -> int:
        return self.starts[-1]

    def _label(self, index: int) -> int:
        return -1 if self.labels is None else int(self.labels[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        shard = bisect.bisect_right(self.starts, index) - 1
        row = self._opened()[shard][index - self.starts[shard]]
        return torch.from_numpy(np.array(row)), self._label(index)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch at once (DataLoader calls this): one indexed read per shard touched."""
        return [self[i] for i in indices]

    def to_tensor_set(self) -> TensorImageSet:
        """The whole split in memory (one copy out of the page cache, nothing decoded)."""
        images = np.concatenate([np.asarray(m) for m in self._opened()])
        labels = None if self.labels is None else torch.from_numpy(self.labels.astype(np.int64))
        return TensorImageSet(torch.from_numpy(images), labels)


class PreparedSource(DataSource):
    params: PreparedParams

    def _folder(self) -> Path:
        return Path(self.params.path).expanduser()

    def _manifest(self) -> dict[str, Any]:
        return read_manifest(self._folder())

    @property
    def num_classes(self) -> int:
        return int(self._manifest().get("num_classes", 0))

    @property
    def class_names(self) -> list[str]:
        return list(self._manifest().get("class_names", []))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._manifest()["splits"])

    def check(self) -> None:
        manifest = self._manifest()
        folder = self._folder()
        if manifest["resolution"] != self.resolution:
            raise DataError(
                f"data.path = '{folder}' was prepared at {manifest['resolution']}x"
                f"{manifest['resolution']} but data.resolution = {self.resolution}. Prepare it "
                f"at this size into another folder (`sagan data prepare ... --resolution "
                f"{self.resolution}`), or set data.resolution = {manifest['resolution']}."
            )
        fix = (
            f"Prepare the data set again (`sagan data prepare` into a new folder, or delete "
            f"{folder} first)."
        )
        for split in manifest["splits"].values():
            for shard in split["shards"]:
                verify_file(folder / shard["file"], shard["bytes"], shard["sha256"], fix)
            if split.get("labels"):
                labels = split["labels"]
                verify_file(folder / labels["file"], labels["bytes"], labels["sha256"], fix)

    def fingerprint(self) -> dict[str, Any]:
        manifest = self._manifest()
        return {"prepared_from": manifest["source"], "shards": manifest["splits"]}

    def split_size(self, name: str) -> int:
        return int(self._manifest()["splits"][name]["count"])

    def split(self, name: str) -> ImageSet:
        manifest = self._manifest()
        if name not in manifest["splits"]:
            raise DataError(
                f"data.path = '{self._folder()}' has no '{name}' split (it has "
                f"{', '.join(manifest['splits'])})."
            )
        split = manifest["splits"][name]
        folder = self._folder()
        labels = np.load(folder / split["labels"]["file"]) if split.get("labels") else None
        return PreparedImageSet(
            [folder / shard["file"] for shard in split["shards"]],
            [int(shard["count"]) for shard in split["shards"]],
            labels,
        )
