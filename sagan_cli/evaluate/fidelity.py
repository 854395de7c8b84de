"""The metrics of one evaluation from one pass of features per sample set and extractor.

Generated images and the reference go through a torch-fidelity feature extractor
once (``torch_fidelity.utils.get_featuresdict_from_dataset``, the function its
``calculate_metrics`` uses); FID (Fréchet distance), IS, KID and precision/recall
come from those features through torch-fidelity's own functions, and density and
coverage (Naeem et al., ICML 2020) from the same arrays here. A second extractor
(DINOv2) is a second pass over the images, not one per metric.

Images go in as torch-fidelity expects them: uint8 RGB at the generator's
resolution (its extractors resize internally, as the TF reference does).

Reference cache: one folder per key under the cache root, holding the reference's
features. The key hashes a format version, the data source's identity (name,
parameters, resolution and a fingerprint of its files' content), the split, the
image count, the extractor and its weights' SHA-256. One process fills an entry
at a time (a file lock); ``meta.json`` is written last, so a folder without it
(a crash mid-way) is wiped and recomputed, and so is one whose files fail to
load, with a notice.

torch-fidelity is imported where a metric is computed: importing it imports
torchvision and torch._dynamo (about 2 s), which every command that merely might
evaluate (``sagan train``, each ablation worker) would pay at start-up.
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
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import Dataset

from sagan_cli.errors import SaganError
from sagan_cli.evaluate.extractors import Extractor, build_extractor
from sagan_cli.evaluate.weights import ExtractorWeights
from sagan_cli.fileio import atomic_write, atomic_write_json

CACHE_FORMAT = 3  # 2: data identities carry a content fingerprint; 3: raw features
CACHE_ENV = "SAGAN_CACHE_DIR"
LOCK_NAME = ".lock"
FEATURES_FILE = "features.pt"


def kid_subset_size(generated: int, reference: int) -> int:
    """torch-fidelity's KID subset size, capped by the smaller set."""
    from torch_fidelity.defaults import DEFAULTS

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
    extractor: str
    preprocessing: str

    def digest(self) -> str:
        payload = {
            "format": CACHE_FORMAT,
            "identity": self.identity,
            "split": self.split,
            "count": self.count,
            "extractor": self.extractor,
            "weights": self.weights_sha256,
            "preprocessing": self.preprocessing,
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
                torch.load(path, map_location="cpu", weights_only=True)
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
                "extractor": key.extractor,
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


def features_of(
    images: Dataset,
    weights: ExtractorWeights,
    layers: list[str],
    device: torch.device,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """One pass of ``images`` (uint8) through the extractor: layer -> (N, D) float features."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    net = _extractor_on(weights, tuple(layers), device.type)
    # torch-fidelity's DataLoader draws from torch's global RNG: an evaluation (or a cached
    # reference that needs none) must not change what a training run draws next
    with torch.random.fork_rng(devices=[]):
        return get_featuresdict_from_dataset(
            images, net, batch_size, device.type == "cuda", save_cpu_ram=True, verbose=False
        )


def _extractor_on(weights: ExtractorWeights, layers: tuple[str, ...], device_type: str) -> Any:
    """The extractor on the device. On the CPU the last one is kept: building InceptionV3
    reads and loads ~100 MB, which each sample set and each in-training evaluation paid
    again. On a GPU it is built each time, so no extractor (DINOv2 ViT-g/14 takes 4.5 GB)
    stays in the memory training needs. The weights' SHA-256 is in the key."""
    if device_type == "cuda":
        return build_extractor(weights, list(layers)).cuda()
    return _cpu_extractor(weights, layers)


@lru_cache(maxsize=1)
def _cpu_extractor(weights: ExtractorWeights, layers: tuple[str, ...]) -> Any:
    return build_extractor(weights, list(layers))


def reference_features(
    images: Dataset,
    weights: ExtractorWeights,
    layer: str,
    device: torch.device,
    batch_size: int,
    cache: tuple[ReferenceCache, ReferenceKey] | None,
) -> torch.Tensor:
    """The reference's features (one layer), from the cache or computed once and cached."""
    if cache is None:
        return features_of(images, weights, [layer], device, batch_size)[layer]
    store, key = cache
    with store.filling(key) as folder:
        path = folder / FEATURES_FILE
        if store.is_complete(key) and path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)[layer]
        found = features_of(images, weights, [layer], device, batch_size)[layer]
        atomic_write(path, lambda handle: torch.save({layer: found}, handle))
        store.commit(key)
        return found


def density_coverage(
    real: torch.Tensor, fake: torch.Tensor, neighborhood: int
) -> tuple[float, float]:
    """Naeem et al. (2020): with r_i the distance of real sample i to its ``neighborhood``-th
    nearest other real sample, density = (1 / (k M)) sum_j sum_i [|f_j - r_i| <= r_i] and
    coverage = (1 / N) sum_i [some fake within r_i of real i]."""
    real, fake = real.double(), fake.double()
    radii = torch.cdist(real, real).kthvalue(neighborhood + 1, dim=1).values  # itself is 0
    inside = torch.cdist(fake, real) <= radii[None, :]  # (M fake, N real)
    density = inside.sum().item() / (neighborhood * len(fake))
    coverage = inside.any(dim=0).double().mean().item()
    return float(density), float(coverage)


@dataclass(frozen=True)
class MetricOptions:
    prc_neighborhood: int = 3  # torch-fidelity's default (a test holds them equal)
    dc_neighborhood: int = 5


def metrics_from_features(
    spec: Extractor,
    metrics: list[str],
    generated: dict[str, torch.Tensor],
    reference: torch.Tensor | None,
    reference_stats: dict[str, np.ndarray] | None,
    options: MetricOptions,
) -> dict[str, float]:
    """Every requested metric of one extractor's space; names carry the space (``fd_dinov2``)."""
    from torch_fidelity.defaults import DEFAULTS
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )
    from torch_fidelity.metric_isc import (
        KEY_METRIC_ISC_MEAN,
        KEY_METRIC_ISC_STD,
        isc_features_to_metric,
    )
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )
    from torch_fidelity.metric_prc import (
        KEY_METRIC_F_SCORE,
        KEY_METRIC_PRECISION,
        KEY_METRIC_RECALL,
        prc_features_to_metric,
    )

    values: dict[str, float] = {}
    kwargs = {**DEFAULTS, "verbose": False, "save_cpu_ram": True}
    fake = generated[spec.layers["fid"]] if "fid" in spec.layers else None
    if "is" in metrics and "is" in spec.layers:
        isc = isc_features_to_metric(
            generated[spec.layers["is"]],
            kwargs["isc_splits"],
            kwargs["samples_shuffle"],
            kwargs["rng_seed"],
        )
        values["is_mean"], values["is_std"] = isc[KEY_METRIC_ISC_MEAN], isc[KEY_METRIC_ISC_STD]
    assert fake is not None
    if "fid" in metrics:
        stats_fake = _float64(fid_features_to_statistics(fake))
        stats_real = reference_stats or (
            _float64(fid_features_to_statistics(reference)) if reference is not None else None
        )
        assert stats_real is not None
        values[spec.key("fid")] = float(
            fid_statistics_to_metric(stats_fake, stats_real, False)[KEY_METRIC_FID]
        )
    if "kid" in metrics:
        assert reference is not None
        size = kid_subset_size(len(fake), len(reference))
        kid = kid_features_to_metric(fake, reference, **{**kwargs, "kid_subset_size": size})
        values[spec.key("kid") + "_mean"] = float(kid[KEY_METRIC_KID_MEAN])
        values[spec.key("kid") + "_std"] = float(kid[KEY_METRIC_KID_STD])
    if "prc" in metrics:
        assert reference is not None
        prc = prc_features_to_metric(
            fake, reference, **{**kwargs, "prc_neighborhood": options.prc_neighborhood}
        )
        values[spec.key("precision")] = float(prc[KEY_METRIC_PRECISION])
        values[spec.key("recall")] = float(prc[KEY_METRIC_RECALL])
        values[spec.key("f_score")] = float(prc[KEY_METRIC_F_SCORE])
    if "dc" in metrics:
        assert reference is not None
        density, coverage = density_coverage(reference, fake, options.dc_neighborhood)
        values[spec.key("density")], values[spec.key("coverage")] = density, coverage
    return values


def _float64(stats: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        "mu": np.asarray(stats["mu"], np.float64),
        "sigma": np.asarray(stats["sigma"], np.float64),
    }


@dataclass(frozen=True)
class StatsFile:
    """Published reference statistics (TTUR's fid_stats_*.npz, clean-fid's, ours): ``mu``,
    ``sigma`` and optionally raw ``features`` of the reference set."""

    path: Path
    sha256: str
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None
    claimed_extractor: str | None

    def stats(self) -> dict[str, np.ndarray]:
        return {"mu": self.mu.astype(np.float64), "sigma": self.sigma.astype(np.float64)}


def read_stats_file(path: Path, spec: Extractor) -> StatsFile:
    """A statistics file, checked: ``mu`` (D,) and ``sigma`` (D, D) of this extractor's D,
    finite; an ``extractor`` entry, when present, must name this extractor."""
    import hashlib

    where = f"--reference {path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if not {"mu", "sigma"} <= set(keys):
                raise SaganError(
                    f"{where}: a statistics file needs arrays 'mu' and 'sigma' (it has "
                    f"{', '.join(keys) or 'none'}). Give an .npz with both (TTUR's and clean-fid's "
                    f"files have them; `sagan eval --export-stats` writes them)."
                )
            mu, sigma = archive["mu"], archive["sigma"]
            features = archive["features"] if "features" in keys else None
            claimed = str(archive["extractor"]) if "extractor" in keys else None
    except SaganError:
        raise
    except Exception as exc:
        raise SaganError(f"{where} is not a readable .npz statistics file ({exc}).") from None
    dims = spec.dims
    if mu.shape != (dims,) or sigma.shape != (dims, dims):
        raise SaganError(
            f"{where}: mu is {mu.shape} and sigma {sigma.shape}, but {spec.name} features have "
            f"{dims} dimensions: the file was made with another feature extractor. Use a file "
            f"of the same extractor (--feature-extractor)."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise SaganError(f"{where}: mu or sigma holds NaN or infinite values; the file is broken.")
    if claimed is not None and claimed != spec.name:
        raise SaganError(
            f"{where} says it was made with '{claimed}', not {spec.name}; choose that extractor "
            f"(--feature-extractor {claimed}) or another file."
        )
    if features is not None and (features.ndim != 2 or features.shape[1] != dims):
        raise SaganError(f"{where}: 'features' is {features.shape}, not (N, {dims}).")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return StatsFile(path, digest, mu, sigma, features, claimed)


def write_stats_file(
    path: Path, features: torch.Tensor, spec: Extractor, description: dict[str, Any]
) -> None:
    """``mu``, ``sigma`` (float64) and the raw ``features`` of a set, with the extractor's name:
    the format TTUR's files use, so other tools compare against the same reference."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats = _float64(fid_features_to_statistics(features))
    arrays = {
        **stats,
        "features": features.numpy().astype(np.float32),
        "extractor": np.array(spec.name),
        "description": np.array(json.dumps(description, sort_keys=True)),
    }
    atomic_write(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]
