"""``sagan bench data``: can the loader feed the device? Images/s the data path delivers
beside the images/s a training step consumes.

Measured for the recipe's data at its batch size, on the CPU side of the loader:

* ``decode``: the streaming path training uses for data that does not fit in memory
  (a DataLoader decoding and resizing each image), with 0..N worker processes;
* ``pil``: decoding and resizing alone (image folders), the same work with no
  loader around it: the floor ``prepare`` is measured against;
* ``prepare``: ``sagan data prepare`` of the data (decode, resize, write shards);
* ``prepared``: the memory-mapped shards ``prepare`` wrote, streamed the same way;
* ``train``: the recipe's training iteration on the chosen device (``bench train``).

The verdict compares the best loader with the training rate; the recommendation is
the number of decode workers a given device rate needs.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sagan_cli.api import ImageSet
from sagan_cli.components import build_data_source, check_data
from sagan_cli.datasets.files import FileImageSet
from sagan_cli.datasets.params import PreparedParams
from sagan_cli.datasets.prepared import PreparedSource
from sagan_cli.imagefiles import load_image
from sagan_cli.plugins import Registry
from sagan_cli.prepare import prepare_dataset
from sagan_cli.recipe import Recipe
from sagan_cli.train.data import BatchStream


@dataclass
class DataRow:
    path: str  # decode, pil, prepare, prepared, train
    workers: int
    images: int
    seconds: float
    img_per_s: float
    img_per_s_per_worker: float


def stream_rate(images: ImageSet, batch: int, workers: int, batches: int) -> tuple[int, float]:
    """(images, seconds) of ``batches`` batches from the streaming loader after one warm-up."""
    stream = BatchStream(
        images, batch, 0, torch.device("cpu"), hflip=False, resident_limit=0, workers=workers
    )
    stream.next()  # start the workers
    started = time.perf_counter()
    for _ in range(batches):
        stream.next()
    return batches * batch, time.perf_counter() - started


def _decode(path: Path, resolution: int) -> int:
    return int(load_image(path, resolution).shape[0])


def pil_rate(files: list[Path], resolution: int, workers: int) -> tuple[int, float]:
    """Decode and resize ``files`` with a plain process pool: no loader, no writing."""
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    started = time.perf_counter()
    with context.Pool(workers) as pool:
        pool.starmap(_decode, [(path, resolution) for path in files], chunksize=64)
    return len(files), time.perf_counter() - started


def bench_data(
    recipe: Recipe,
    registry: Registry,
    worker_counts: list[int],
    batches: int,
    prepare_limit: int,
    train_step_s: Callable[[], float] | None,
    report: Callable[[DataRow], None] = lambda row: None,
) -> list[DataRow]:
    """Every measurement of the recipe's data path, in order; see the module docstring."""
    source = build_data_source(recipe, registry)
    check_data(source, registry)
    images = source.split("train")
    batch = recipe.train.batch_size
    rows: list[DataRow] = []

    def add(path: str, workers: int, count: int, seconds: float) -> None:
        rate = count / max(seconds, 1e-9)
        row = DataRow(path, workers, count, seconds, rate, rate / max(1, workers))
        rows.append(row)
        report(row)

    wanted = min(len(images) // batch, batches)
    for workers in worker_counts:
        add("decode", workers, *stream_rate(images, batch, workers, wanted))
    total = sum(source.split_size(s) for s in source.splits)
    cores = os.cpu_count() or 1
    if isinstance(images, FileImageSet) and total <= prepare_limit:
        add("pil", cores, *pil_rate(images.files, recipe.data.resolution, cores))
    if total <= prepare_limit and recipe.data.source != "prepared":
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            prepare_dataset(source, Path(folder) / "prepared", workers=cores)
            add("prepare", cores, total, time.perf_counter() - started)
            params = PreparedParams(path=str(Path(folder) / "prepared"))
            shards = PreparedSource("prepared", params, recipe.data.resolution).split("train")
            for workers in sorted({0, max(worker_counts)}):
                add("prepared", workers, *stream_rate(shards, batch, workers, wanted))
    elif recipe.data.source == "prepared":
        add("prepared", 0, *stream_rate(images, batch, 0, wanted))
    if train_step_s is not None:
        add("train", 0, batch, train_step_s())
    return rows


def verdict(rows: list[DataRow], device_rate: float | None) -> list[str]:
    """What the numbers mean: does the best loader keep up, and how many decode workers the
    device's rate needs."""
    target = device_rate or next(r.img_per_s for r in rows if r.path == "train")
    loaders = [r for r in rows if r.path in ("decode", "prepared")]
    best = max(loaders, key=lambda r: r.img_per_s)
    lines = []
    if best.img_per_s >= target:
        lines.append(
            f"The loader keeps up: the {best.path} path with {best.workers} worker(s) delivers "
            f"{best.img_per_s:,.0f} images/s, {best.img_per_s / target:.1f}x the {target:,.0f} "
            f"images/s training consumes."
        )
    else:
        lines.append(
            f"The loader is the bottleneck by {100 * (1 - best.img_per_s / target):.0f}%: its "
            f"best path ({best.path}, {best.workers} worker(s)) delivers {best.img_per_s:,.0f} of "
            f"the {target:,.0f} images/s training consumes."
        )
    single = [r for r in rows if r.path == "decode" and r.workers == 1]
    if single:
        per_worker = single[0].img_per_s
        needed = math.ceil(target / max(per_worker, 1e-9))
        lines.append(
            f"Decoding runs at {per_worker:,.0f} images/s per worker: {target:,.0f} images/s "
            f"needs about {needed} decode worker(s) (cores), or `sagan data prepare` once."
        )
    prepared = [r for r in rows if r.path == "prepared"]
    if prepared:
        top = max(prepared, key=lambda r: r.img_per_s)
        lines.append(
            f"Prepared shards stream at {top.img_per_s:,.0f} images/s with {top.workers} "
            f"worker(s) ({top.img_per_s / max(1, top.workers):,.0f} per process)."
        )
    pil = [r for r in rows if r.path == "pil"]
    prepare = [r for r in rows if r.path == "prepare"]
    if pil and prepare:
        lines.append(
            f"Preparing took {prepare[0].seconds / pil[0].seconds:.2f}x the time of decoding and "
            f"resizing alone on the same {pil[0].workers} core(s)."
        )
    return lines
