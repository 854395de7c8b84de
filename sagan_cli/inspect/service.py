"""``sagan attention`` (where a run's attention looks) and ``sagan sample`` (export samples)."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Subset

from sagan_cli.api import DataSource
from sagan_cli.checkpoint import load_checkpoint, load_generator_weights
from sagan_cli.components import (
    build_data_source,
    build_networks,
    check_data,
    num_classes_for,
    partners_by_size,
)
from sagan_cli.datasets.base import decode_all
from sagan_cli.device import available_memory, select_device
from sagan_cli.errors import CheckpointError, DataError, ResultsError, SaganError
from sagan_cli.evaluate.service import checkpoint_for
from sagan_cli.execution import plan_execution
from sagan_cli.fileio import atomic_write, atomic_write_bytes
from sagan_cli.inspect.figure import LayerMaps, render, save_figure
from sagan_cli.inspect.maps import (
    Layer,
    attention_layers,
    auto_queries,
    captured_inputs,
    maps_of,
    query_maps,
    statistics,
)
from sagan_cli.model.networks import Discriminator, Generator
from sagan_cli.model.sampling import fixed_inputs, sample_images, to_uint8, to_unit_range
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe, split_list
from sagan_cli.results import open_run_folder

AUTO_QUERIES = 3


@dataclass
class LoadedRun:
    run_path: Path
    recipe: Recipe
    source: DataSource | None
    generator: Generator
    discriminator: Discriminator
    checkpoint: Path
    step: int
    device: torch.device


def load_run(
    run_path: Path, checkpoint: str, device: str, registry: Registry, need_data: bool
) -> LoadedRun:
    """A run's networks at a checkpoint: G with the EMA weights, D with its own."""
    run, recipe = open_run_folder(run_path, registry)
    path = checkpoint_for(run, checkpoint)
    chosen = select_device(device)
    source = None
    if need_data or recipe.model.conditional:
        source = build_data_source(recipe, registry)
        try:
            check_data(source, registry)
        except DataError as exc:
            why = (
                "the discriminator looks at real images"
                if need_data
                else "the model is conditional"
            )
            raise DataError(f"{exc} ({why}: the run's data must be readable here.)") from None
    state = load_checkpoint(path, chosen, run.id, run.path)
    classes = num_classes_for(recipe, source) if source is not None else 0
    generator, discriminator = build_networks(recipe, classes, registry, source)
    load_generator_weights(generator, state, path, run.recipe_path)
    try:
        discriminator.load_state_dict(state["discriminator"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"{path} does not fit the discriminator: {str(exc).splitlines()[0]}"
        ) from None
    generator.to(chosen).eval()
    discriminator.to(chosen).eval()
    return LoadedRun(
        run.path, recipe, source, generator, discriminator, path, int(state["step"]), chosen
    )


MAX_SAMPLES = 100_000_000
SAMPLE_FILE = re.compile(r"^\d{6}\.png$")


def _earlier_export(folder: Path) -> list[Path]:
    """The files an earlier ``sagan sample`` wrote into ``folder`` (numbered PNGs, samples.json)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if SAMPLE_FILE.match(p.name) or p.name == "samples.json"]


def check_sample_space(num: int, resolution: int, z_dim: int, out: Path) -> None:
    """Refuse an export that cannot fit in memory (all samples are held at once) or on disk."""
    image_bytes = 3 * resolution * resolution
    need = num * (image_bytes + 4 * z_dim)
    free = available_memory(torch.device("cpu"))
    if need > free * 0.8:
        fits = max(1, int(free * 0.8) // (image_bytes + 4 * z_dim))
        raise SaganError(
            f"--num {num}: {num:,} samples at {resolution}x{resolution} take {need / 2**30:,.1f} "
            f"GiB in memory, but {free / 2**30:.1f} GiB is available. Export at most {fits:,} "
            f"at a time (different --seed values give different samples)."
        )
    existing = next(p for p in (out, *out.parents) if p.exists())
    disk = shutil.disk_usage(existing).free
    if num * image_bytes > disk:
        raise SaganError(
            f"--num {num}: the samples need up to {num * image_bytes / 2**30:,.1f} GiB but "
            f"{existing} has {disk / 2**30:.1f} GiB free. Free space or choose another --out."
        )


def refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ResultsError(
            f"{path} already exists; nothing was written. Choose another --out, or pass --force "
            f"to replace it."
        )


def parse_queries(text: str, resolution: int) -> list[tuple[int, int]]:
    """``x,y;x,y`` pixel positions inside a ``resolution`` x ``resolution`` image."""
    points = []
    for part in [p for p in text.split(";") if p.strip()]:
        values = split_list(part)
        try:
            x, y = (int(v) for v in values)
        except ValueError:
            raise SaganError(
                f"--queries '{text}': '{part}' is not x,y in pixels; write e.g. --queries 8,16;24,16."
            ) from None
        if not (0 <= x < resolution and 0 <= y < resolution):
            raise SaganError(
                f"--queries: ({x}, {y}) lies outside the {resolution}x{resolution} image; "
                f"x and y run from 0 to {resolution - 1}."
            )
        points.append((x, y))
    if not points:
        raise SaganError("--queries gives no points; write auto or x,y;x,y.")
    return points


def _inputs_for(
    loaded: LoadedRun, net: str, count: int, seed: int
) -> tuple[torch.Tensor, list[Layer], dict[str, torch.Tensor]]:
    """Images (uint8) and each attention layer's input for them."""
    network = loaded.generator if net == "g" else loaded.discriminator
    layers = attention_layers(network, net)
    with captured_inputs(layers) as inputs, torch.no_grad():
        if net == "g":
            z, labels = fixed_inputs(
                count, loaded.generator.z_dim, loaded.generator.num_classes, seed
            )
            labels = None if labels is None else labels.to(loaded.device)
            images = to_uint8(loaded.generator(z.to(loaded.device), labels)).cpu()
        else:
            assert loaded.source is not None
            split = loaded.source.split("train")
            order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
            subset: Subset[Any] = Subset(split, order[:count].tolist())  # type: ignore[arg-type]
            decoded = decode_all(subset, workers=0)
            images = decoded.images
            labels = (
                None
                if decoded.labels is None or not loaded.recipe.model.conditional
                else decoded.labels.to(loaded.device)
            )
            loaded.discriminator(to_unit_range(images.to(loaded.device)), labels)
    return images, layers, inputs


def attention_maps(
    *,
    run_path: Path,
    checkpoint: str,
    net: str,
    layer: int | None,
    queries: str,
    num_images: int,
    seed: int,
    out: Path | None,
    output_format: str,
    force: bool,
    device: str,
    registry: Registry,
) -> tuple[Path, dict[str, dict[str, float]]]:
    """Figure 5 of the paper for a run (or the raw maps as npz); returns the file and the
    per-layer statistics of the chosen queries."""
    if net not in ("g", "d"):
        raise SaganError(f"--net '{net}': choose g (generator) or d (discriminator).")
    if output_format not in ("png", "npz"):
        raise SaganError(f"--format '{output_format}': choose png or npz.")
    if num_images < 1:
        raise SaganError(f"--num-images {num_images}: give 1 or more.")
    loaded = load_run(run_path, checkpoint, device, registry, need_data=net == "d")
    resolution = loaded.recipe.data.resolution
    explicit = None if queries == "auto" else parse_queries(queries, resolution)
    out = out or loaded.run_path / "attention" / f"{net}-{loaded.checkpoint.stem}.{output_format}"
    if out.is_dir():
        raise ResultsError(
            f"--out {out} is a folder; `sagan attention` writes one file: give a path ending in "
            f".{output_format} (--force replaces a file, never a folder)."
        )
    refuse_existing(out, force)
    network_name = "generator" if net == "g" else "discriminator"
    available = [
        layer_.size
        for layer_ in attention_layers(
            loaded.generator if net == "g" else loaded.discriminator, net
        )
    ]
    if not available:
        raise SaganError(
            f"The run's {network_name} has no attention layers (model.attention_layer = []), so "
            f"there is nothing to show. Try --net {'d' if net == 'g' else 'g'}, or a run with attention."
        )
    if layer is not None and layer not in available:
        raise SaganError(
            f"--layer {layer}: the run's {network_name} has attention at {available} (feature "
            f"sizes), not at {layer}."
        )
    images, layers, inputs = _inputs_for(loaded, net, num_images, seed)
    layers = [l_ for l_ in layers if layer is None or l_.size == layer]
    with_maps = [l_ for l_ in layers if l_.has_maps]
    if not with_maps:
        variant = loaded.recipe.model.attention.variant
        raise SaganError(
            f"Attention '{variant}' has no attention maps: it is not a query-key attention (or "
            f"its plugin does not implement sagan_cli.api.AttentionMaps), so there is no "
            f"'where does this pixel look' to show."
        )
    points = (
        torch.tensor(explicit).expand(len(images), -1, -1)
        if explicit is not None
        else auto_queries(images, AUTO_QUERIES)
    )
    found: list[LayerMaps] = []
    stats: dict[str, dict[str, float]] = {}
    partners = partners_by_size(loaded.recipe, registry, loaded.source)
    for layer_ in with_maps:
        beta = maps_of(layer_, inputs[layer_.name]).cpu()  # (B, N, M)
        found.append(
            LayerMaps(layer_.name, layer_.size, query_maps(layer_, beta, points, resolution))
        )
        stats[layer_.name] = statistics(layer_, beta, layer_.size, partners(layer_.size))
    if output_format == "npz":
        arrays: dict[str, Any] = {
            "images": images.permute(0, 2, 3, 1).numpy(),
            "queries": points.numpy(),
            "step": np.array(loaded.step),
        }
        for maps in found:
            arrays[f"maps_{maps.name}"] = maps.maps.numpy()
        atomic_write(out, lambda handle: np.savez(handle, **arrays))
    else:
        title = (
            f"{loaded.recipe.name} {loaded.run_path.name}: {network_name} attention at step "
            f"{loaded.step} ({loaded.checkpoint.name}); column 1: queries; then where each attends"
        )
        save_figure(render(images, points, found, title), out)
    return out, stats


def export_samples(
    *,
    run_path: Path,
    checkpoint: str,
    num: int,
    out: Path,
    label: int | None,
    seed: int,
    truncation: float | None,
    force: bool,
    device: str,
    registry: Registry,
    batch_size: int = 64,
) -> Path:
    """``num`` samples of the run's EMA generator as PNG files in a folder, or a uint8 npz."""
    if not 1 <= num <= MAX_SAMPLES:
        raise SaganError(
            f"--num {num}: give 1 to {MAX_SAMPLES:,} samples (export more with several "
            f"commands and different --seed values)."
        )
    if truncation is not None and not (math.isfinite(truncation) and truncation > 0):
        raise SaganError(
            f"--truncation {truncation}: give a positive, finite threshold on |z|, e.g. 1.0 (the "
            f"truncation trick draws every latent entry within it)."
        )
    refuse_existing(out, force)
    if out.exists() and out.suffix != ".npz" and not out.is_dir():
        raise SaganError(
            f"--out {out} is a file; give a folder (PNG files) or a path ending in .npz."
        )
    loaded = load_run(run_path, checkpoint, device, registry, need_data=False)
    check_sample_space(num, loaded.recipe.data.resolution, loaded.generator.z_dim, out)
    classes = loaded.generator.num_classes
    if label is not None and not (classes and 0 <= label < classes):
        raise SaganError(
            f"--class {label}: the run's generator "
            + (f"has classes 0 to {classes - 1}." if classes else "is unconditional; drop --class.")
        )
    precision = plan_execution(loaded.recipe, loaded.device).precision
    images = sample_images(
        loaded.generator,
        num,
        seed,
        loaded.device,
        precision,
        batch_size,
        truncation=truncation,
        label=label,
    )
    _, labels = fixed_inputs(num, loaded.generator.z_dim, classes, seed, label=label)
    provenance = {
        "run": str(loaded.run_path),
        "checkpoint": loaded.checkpoint.name,
        "step": loaded.step,
        "seed": seed,
        "truncation": truncation,
        "num": num,
    }
    if out.suffix == ".npz":
        arrays: dict[str, Any] = {"images": images.permute(0, 2, 3, 1).numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        atomic_write(out, lambda handle: np.savez(handle, **arrays))
        return out
    for earlier in _earlier_export(out):  # --force replaces our files only, never others
        earlier.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        atomic_write(out / f"{index:06d}.png", partial(picture.save, format="PNG"))
    atomic_write_bytes(out / "samples.json", json.dumps(provenance, indent=2).encode())
    return out
