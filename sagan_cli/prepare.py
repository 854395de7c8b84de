"""``sagan data prepare``: decode a data source once into memory-mappable uint8 shards.

Any data source (an image folder, npz, CIFAR, Hugging Face, a data plugin) is
decoded, resized and centre-cropped exactly as training does (the source's own
items), split by split, into ``<split>-NNNNN.npy`` shards of uint8 (n, 3, R, R)
in the source's order, plus labels and ``prepared.json`` (the manifest: source
identity, resolution, crop rule, counts, each file's SHA-256). The ``prepared``
data source memory-maps them.

Worker processes decode into the shard file itself (a memory map each writes
its rows into), so nothing is pickled back but labels. Every finished shard is
renamed into place and recorded in ``.progress.json``: a killed prepare resumes
with the shards it finished. The manifest is written last, so a folder with one
is complete. A folder holding another data set (or other files) is refused.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sagan_cli import __version__
from sagan_cli.api import DataSource, ImageSet, TensorImageSet
from sagan_cli.components import build_data_source, check_data
from sagan_cli.datasets.prepared import (
    FORMAT,
    MANIFEST,
    read_manifest,
    remember_verified,
    sha256_of,
    verify_file,
)
from sagan_cli.errors import DataError
from sagan_cli.fileio import atomic_write, atomic_write_json, remove_stale_temp_files
from sagan_cli.imagefiles import CROP_RULE
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe, load_recipe, resolve_recipe

PROGRESS = ".progress.json"
CHUNK = 64  # images per worker task: small enough to balance, large enough to amortise


@dataclass(frozen=True)
class PrepareResult:
    folder: Path
    manifest: dict[str, Any]
    already: bool  # the folder held this data set prepared before (and every file verified)
    repaired: tuple[str, ...] = ()  # damaged or missing files this run prepared again


def source_recipe(
    ref: str, overrides: list[str], resolution: int | None, labels: bool, registry: Registry
) -> Recipe:
    """What ``sagan data prepare REF`` prepares: a folder of images, an .npz file, or the data
    of a recipe (its ``--set`` overrides applied)."""
    path = Path(ref).expanduser()
    extra = [f"data.resolution={resolution}"] if resolution is not None else []
    if path.is_dir():
        raw = {
            "name": "prepare",
            "data": {"source": "image-folder", "path": str(path.resolve()), "labels": labels},
        }
        return resolve_recipe(raw, [*overrides, *extra], origin=str(path), registry=registry)
    if path.suffix == ".npz" and path.is_file():
        raw = {"name": "prepare", "data": {"source": "npz", "path": str(path.resolve())}}
        return resolve_recipe(raw, [*overrides, *extra], origin=str(path), registry=registry)
    recipe = load_recipe(ref, [*overrides, *extra], registry=registry)
    if recipe.data.source == "prepared":
        raise DataError(
            f"{ref} already reads prepared data (data.source = 'prepared'); nothing to prepare."
        )
    return recipe


def _identity(source: DataSource) -> dict[str, Any]:
    identity = source.identity()
    identity.pop("resolution", None)
    return identity


def _check_folder(out: Path, identity: dict[str, Any], resolution: int, shard: int) -> dict | None:
    """The progress record to resume, None to start fresh; refuses a folder holding another
    data set or unrelated files."""
    if (out / MANIFEST).is_file():
        return None  # handled by the caller (already prepared, or another data set)
    progress_path = out / PROGRESS
    if progress_path.is_file():
        import json

        try:
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            progress = {}
        same = (
            progress.get("source") == identity
            and progress.get("resolution") == resolution
            and progress.get("shard_images") == shard
        )
        if not same:
            raise DataError(
                f"{out} holds an unfinished preparation of another data set (or another "
                f"resolution or shard size). Finish that one with its own command, delete "
                f"{out}, or prepare into another folder."
            )
        return progress
    if out.exists() and any(out.iterdir()):
        raise DataError(
            f"{out} is not empty and holds no prepared data set; nothing was written. Prepare "
            f"into a new or empty folder."
        )
    return None


def _worker_set(images: ImageSet) -> None:
    global _IMAGES
    _IMAGES = images


_IMAGES: ImageSet | None = None


def _decode_chunk(shard_path: str, start: int, stop: int, offset: int) -> list[int]:
    """In a worker: items start..stop-1 into rows offset.. of the shard; returns their labels."""
    assert _IMAGES is not None
    rows = np.load(shard_path, mmap_mode="r+")
    labels = []
    for row, index in enumerate(range(start, stop), offset):
        image, label = _IMAGES[index]
        rows[row] = image.numpy()
        labels.append(int(label))
    rows.flush()
    return labels


def prepare_dataset(
    source: DataSource,
    out: Path,
    shard_images: int = 4096,
    workers: int | None = None,
    on_progress: Callable[[str, int, int], None] = lambda split, done, total: None,
) -> PrepareResult:
    """Decode every split of ``source`` into ``out`` (resuming an unfinished preparation)."""
    resolution = source.resolution
    identity = _identity(source)
    damaged: list[str] = []
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out, "OUT")
        if manifest["source"] != identity or manifest["resolution"] != resolution:
            raise DataError(
                f"{out} already holds a prepared data set of another source or resolution "
                f"({manifest['source'].get('source')} at {manifest['resolution']}px); nothing "
                f"was written. Prepare into another folder, or delete {out} first."
            )
        damaged = _damaged_files(out, manifest)
        if not damaged:
            return PrepareResult(out, manifest, already=True)
        shard_images = _resume_from_manifest(out, manifest, damaged)
    progress = _check_folder(out, identity, resolution, shard_images) or {
        "format": FORMAT,
        "source": identity,
        "resolution": resolution,
        "shard_images": shard_images,
        "done": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    atomic_write_json(out / PROGRESS, progress)
    workers = max(1, workers or os.cpu_count() or 1)
    splits: dict[str, Any] = {}
    for split in source.splits:
        images = source.split(split)
        splits[split] = _prepare_split(
            split, images, out, resolution, shard_images, workers, progress, on_progress
        )
    manifest = {
        "format": FORMAT,
        "source": identity,
        "resolution": resolution,
        "crop": CROP_RULE,
        "num_classes": source.num_classes,
        "class_names": source.class_names,
        "splits": splits,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sagan_cli": __version__,
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    return PrepareResult(out, manifest, already=False, repaired=tuple(damaged))


def _damaged_files(out: Path, manifest: dict[str, Any]) -> list[str]:
    """The shard and label files that are missing or no longer what the manifest records
    (sizes always; hashes of files changed since they were last verified on this machine)."""
    damaged = []
    for split in manifest["splits"].values():
        records = [*split["shards"], *([split["labels"]] if split.get("labels") else [])]
        for record in records:
            try:
                verify_file(out / record["file"], record["bytes"], record["sha256"], "")
            except DataError:
                damaged.append(record["file"])
    return damaged


def _resume_from_manifest(out: Path, manifest: dict[str, Any], damaged: list[str]) -> int:
    """Turn a complete preparation with damaged files back into an unfinished one: the intact
    shards stay done (their labels kept beside them), the damaged ones are prepared again (all
    of a split whose labels file is damaged). Returns the shard size it was prepared with."""
    shard_images = max(s["count"] for split in manifest["splits"].values() for s in split["shards"])
    progress: dict[str, Any] = {
        "format": FORMAT,
        "source": manifest["source"],
        "resolution": manifest["resolution"],
        "shard_images": shard_images,
        "done": {},
    }
    for split in manifest["splits"].values():
        record = split.get("labels")
        if record and record["file"] in damaged:
            kept = None  # the labels of its intact shards are lost with it: all again
        else:
            kept = np.load(out / record["file"]) if record else np.full(split["count"], -1)
        start = 0
        for shard in split["shards"]:
            stop = start + shard["count"]
            if kept is not None and shard["file"] not in damaged:
                _save(out / f".{shard['file']}.labels.npy", kept[start:stop])
                progress["done"][shard["file"]] = shard
            else:
                (out / shard["file"]).unlink(missing_ok=True)
            start = stop
    atomic_write_json(out / PROGRESS, progress)
    (out / MANIFEST).unlink()
    return shard_images


def _prepare_split(
    split: str,
    images: ImageSet,
    out: Path,
    resolution: int,
    shard_images: int,
    workers: int,
    progress: dict[str, Any],
    on_progress: Callable[[str, int, int], None],
) -> dict[str, Any]:
    total = len(images)
    if total == 0:
        raise DataError(f"The '{split}' split of the source holds no images; nothing to prepare.")
    labels = np.full(total, -1, dtype=np.int64)
    done = progress["done"]
    in_memory = isinstance(images, TensorImageSet)
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = (
        None
        if in_memory or workers == 1
        else ProcessPoolExecutor(workers, context, initializer=_worker_set, initargs=(images,))
    )
    _worker_set(images)  # the in-process path (one worker, or a decoded set)
    finished = 0
    committer = ThreadPoolExecutor(1)  # one thread: shards are committed in order
    entries: list[dict[str, Any] | Future[dict[str, Any]]] = []  # shard records, in order
    try:
        for number in range(math.ceil(total / shard_images)):
            start, stop = number * shard_images, min(total, (number + 1) * shard_images)
            name = f"{split}-{number:05d}.npy"
            record = done.get(name)
            if record is not None and (out / name).is_file():
                labels[start:stop] = np.load(out / f".{name}.labels.npy")
                entries.append(record)
                finished += stop - start
                on_progress(split, finished, total)
                continue
            tmp = out / f".{name}.tmp"
            np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(stop - start, 3, resolution, resolution)
            ).flush()
            if in_memory:
                assert isinstance(images, TensorImageSet)
                rows = np.load(tmp, mmap_mode="r+")
                rows[:] = images.images[start:stop].numpy()
                rows.flush()
                if images.labels is not None:
                    labels[start:stop] = images.labels[start:stop].numpy()
                finished += stop - start
                on_progress(split, finished, total)
            else:
                chunks = [(s, min(stop, s + CHUNK)) for s in range(start, stop, CHUNK)]
                results: Iterable[list[int]]
                if pool is None:
                    results = (_decode_chunk(str(tmp), a, b, a - start) for a, b in chunks)
                else:
                    results = pool.map(
                        _decode_chunk,
                        [str(tmp)] * len(chunks),
                        [a for a, _ in chunks],
                        [b for _, b in chunks],
                        [a - start for a, _ in chunks],
                    )
                for (a, b), chunk_labels in zip(chunks, results, strict=True):
                    labels[a:b] = chunk_labels
                    finished += b - a
                    on_progress(split, finished, total)
            _save(out / f".{name}.labels.npy", labels[start:stop])
            # hashed and committed in the background while the next shard decodes
            entries.append(committer.submit(_commit, tmp, out / name, stop - start, progress, out))
        shards = [e.result() if isinstance(e, Future) else e for e in entries]
    finally:
        committer.shutdown(wait=True)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    labels_record = None
    if (labels >= 0).any():
        labels_name = f"{split}-labels.npy"
        _save(out / labels_name, labels)
        labels_record = {
            "file": labels_name,
            "bytes": (out / labels_name).stat().st_size,
            "sha256": sha256_of(out / labels_name),
        }
    for name in [s["file"] for s in shards]:
        (out / f".{name}.labels.npy").unlink(missing_ok=True)
    return {"count": total, "shards": shards, "labels": labels_record}


def _commit(
    tmp: Path, final: Path, count: int, progress: dict[str, Any], out: Path
) -> dict[str, Any]:
    """Hash a finished shard, rename it into place and record it (a kill after this keeps it)."""
    digest = sha256_of(tmp)
    record = {"file": final.name, "count": count, "bytes": tmp.stat().st_size, "sha256": digest}
    os.replace(tmp, final)
    remember_verified(final, digest)  # a re-run verifies it without hashing it again
    progress["done"][final.name] = record
    atomic_write_json(out / PROGRESS, progress)
    return record


def _save(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array))


def prepare_command(
    ref: str,
    out: Path,
    overrides: list[str],
    resolution: int | None,
    labels: bool,
    shard_images: int,
    workers: int | None,
    registry: Registry,
    on_progress: Callable[[str, int, int], None],
) -> PrepareResult:
    """``sagan data prepare``: resolve what to prepare, check it, prepare it."""
    if shard_images < 1:
        raise DataError(f"--shard-images {shard_images}: give a positive number of images.")
    recipe = source_recipe(ref, overrides, resolution, labels, registry)
    source = build_data_source(recipe, registry)
    check_data(source, registry)
    free = shutil.disk_usage(next(p for p in (out, *out.parents) if p.exists())).free
    need = sum(source.split_size(s) for s in source.splits) * 3 * source.resolution**2
    if need > free:
        raise DataError(
            f"The prepared data set needs {need / 2**30:.1f} GiB but {out} has "
            f"{free / 2**30:.1f} GiB free. Free space or choose another OUT."
        )
    return prepare_dataset(source, out, shard_images, workers, on_progress)
