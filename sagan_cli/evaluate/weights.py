"""Where the Inception weights come from: option > ``SAGAN_INCEPTION_WEIGHTS`` > torch-fidelity's cache.

torch-fidelity downloads its InceptionV3 weights (converted from the TF FID
reference) into torch hub's checkpoint folder on first use. We resolve the file
ourselves before any sampling, so that an offline machine gets one clear
paragraph instead of a failure minutes into an evaluation, and so that every
result can record the exact weights file (path and SHA-256) behind it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from sagan_cli.errors import WeightsError, describe_exception
from sagan_cli.fileio import atomic_write

ENV = "SAGAN_INCEPTION_WEIGHTS"
EXTRACTOR = "inception-v3-compat"  # torch-fidelity's TF-compatible InceptionV3
DOWNLOAD_TIMEOUT_S = 30


def torch_fidelity_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def cached_weights_path() -> Path:
    """Where torch-fidelity's download lands (torch hub's checkpoints folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / torch_fidelity_url().rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ExtractorWeights:
    """A feature extractor's weights file, resolved and checked before any work."""

    path: Path
    sha256: str
    origin: str  # "option", "environment", "torch-fidelity cache", "downloaded"
    extractor: str = EXTRACTOR  # the extractor's name (torch-fidelity's naming)

    def provenance(self) -> dict[str, str]:
        return {
            "extractor": self.extractor,
            "weights": str(self.path),
            "sha256": self.sha256,
            "origin": self.origin,
        }


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime)


def resolve_inception_weights(
    option: Path | None = None, download: bool = True, training: bool = False
) -> ExtractorWeights:
    """Find (or download) the weights file and check that it is a loadable Inception state dict.

    ``training``: the weights are wanted for in-training evaluation, which a recipe
    can switch off (the error then says how).
    """
    if option is not None:
        path, origin = Path(option).expanduser(), "option"
        if not path.is_file():
            raise WeightsError(f"--inception-weights {option}: no such file.")
    elif os.environ.get(ENV):
        path, origin = Path(os.environ[ENV]).expanduser(), "environment"
        if not path.is_file():
            raise WeightsError(
                f"{ENV}={os.environ[ENV]}: no such file. Fix the variable or unset it."
            )
    else:
        path, origin = cached_weights_path(), "torch-fidelity cache"
        if not path.is_file():
            if not download:
                raise _missing_error("downloading was not allowed", training)
            _download(path, training)
            origin = "downloaded"
    check_weights_file(path)
    return ExtractorWeights(path, file_sha256(path), origin)


def _download(path: Path, training: bool) -> None:
    url = torch_fidelity_url()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise _missing_error(
            f"downloading it from {url} failed: {getattr(exc, 'reason', exc)}", training
        ) from None
    expected_prefix = path.stem.rsplit("-", 1)[-1]
    if not hashlib.sha256(payload).hexdigest().startswith(expected_prefix):
        raise WeightsError(
            f"The download of {url} does not match its hash prefix {expected_prefix}; try again."
        )
    atomic_write(path, lambda handle: handle.write(payload))


def _missing_error(why: str, training: bool) -> WeightsError:
    expected = cached_weights_path()
    switch_off = (
        " (Or train without FID/IS/KID: --set eval.final=false --set eval.every=0.)"
        if training
        else ""
    )
    return WeightsError(
        f"Inception weights for FID/IS/KID are not available: no --inception-weights was given, "
        f"{ENV} is not set, torch-fidelity's file {expected} does not exist, and {why}. Fix it "
        f"in one of three ways: download {torch_fidelity_url()} on a machine with internet and "
        f"put it at {expected}; or pass --inception-weights /path/to/{expected.name}; or set "
        f"{ENV}=/path/to/{expected.name}.{switch_off}"
    )


def check_weights_file(path: Path) -> None:
    """A readable state dict with exactly the InceptionV3 parameters torch-fidelity expects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"Inception weights file {path} is corrupt or not a PyTorch state dict "
            f"({describe_exception(exc, 120)}). Replace it with "
            f"{torch_fidelity_url().rsplit('/', 1)[-1]}."
        ) from None
    expected = expected_inception_shapes()
    if not isinstance(state, dict):
        raise WeightsError(
            f"Inception weights file {path} holds a {type(state).__name__}, not a state dict."
        )
    missing = sorted(set(expected) - set(state))
    wrong = sorted(
        k for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != expected[k]
    )
    if missing or wrong:
        detail = (
            f"missing {len(missing)} tensor(s) such as '{missing[0]}'"
            if missing
            else f"'{wrong[0]}' has shape {tuple(state[wrong[0]].shape)}, expected {expected[wrong[0]]}"
        )
        raise WeightsError(
            f"Inception weights file {path} does not fit torch-fidelity's InceptionV3 ({detail}). "
            f"Use {torch_fidelity_url().rsplit('/', 1)[-1]} or a state dict saved from "
            f"torch_fidelity's FeatureExtractorInceptionV3."
        )


def untrained_inception() -> torch.nn.Module:
    """torch-fidelity's InceptionV3 with PyTorch's default initialisation and no weights file.

    Its constructor always loads weights (downloading if given no path), so the
    download and the load are skipped for this one construction.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    class _Untrained(inception.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: object, **kwargs: object) -> None:
            return None

    original = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = lambda *args, **kwargs: {}
    try:
        return _Untrained(EXTRACTOR, ["2048"])
    finally:
        inception.load_state_dict_from_url = original


def write_random_inception(path: Path, seed: int = 0) -> Path:
    """A randomly initialised torch-fidelity InceptionV3 state dict at ``path``: a weights file
    for tests and rehearsals where the canonical one cannot be downloaded. Its numbers are
    not comparable with anything published.

    Kaiming-normal convs keep activations at unit scale through the ~50 layers (PyTorch's
    default initialisation shrinks them to ~1e-8, which would make every FID about 0).
    """
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = untrained_inception()
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
    torch.save(model.state_dict(), path)
    return path


@lru_cache(maxsize=1)
def expected_inception_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of torch-fidelity's InceptionV3, without any weights file."""
    return {name: tuple(t.shape) for name, t in untrained_inception().state_dict().items()}
