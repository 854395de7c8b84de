"""Feature extractors for evaluation: torch-fidelity's InceptionV3 and DINOv2.

Names follow torch-fidelity's (``inception-v3-compat``, ``dinov2-vit-l-14``). A
metric computed in another space than Inception's carries the space in its name:
the Fréchet distance in DINOv2 space is ``fd_dinov2`` (Stein et al., NeurIPS 2023),
never ``fid``.

DINOv2 preprocesses as the reference implementation of FD_DINOv2 does (dgm-eval,
Stein et al., NeurIPS 2023): each uint8 RGB image is resized to 224x224 by PIL's
bicubic filter, scaled to [0, 1] and normalised with ImageNet's mean and std, so
``fd_dinov2`` is comparable with published FD_DINOv2 numbers. The network is the
official architecture, built by timm (extra ``dinov2``) and loaded with the
official weights file, so no code is fetched at run time. Its positional
embeddings (37x37 in the file) are resized to the 16x16 grid of a 224 input once,
as the official model does at every call (bicubic, scale (16 + 0.1) / 37, no
antialiasing); ViT-g/14's SwiGLU weights (``mlp.w12``, ``mlp.w3``) load into timm's
packed layers (``mlp.fc1``, ``mlp.fc2``). The features are the class token after the
final norm. This path has not been compared here with torch.hub's official model
(no network on the development machines).

Inception preprocesses as torch-fidelity does (uint8 at the samples' resolution,
resized inside the network to 299x299 by TF1's bilinear resize).

Weights resolve like Inception's: ``--dinov2-weights PATH``, else
``SAGAN_DINOV2_WEIGHTS``, else torch hub's checkpoint folder, else a download of the
official file; offline with none of these, one paragraph says what to fetch.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sagan_cli.errors import SaganError, WeightsError, describe_exception
from sagan_cli.evaluate.weights import (
    DOWNLOAD_TIMEOUT_S,
    EXTRACTOR,
    ExtractorWeights,
    file_sha256,
    resolve_inception_weights,
)
from sagan_cli.extras import optional
from sagan_cli.fileio import atomic_write

DINOV2_ENV = "SAGAN_DINOV2_WEIGHTS"
DINOV2_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DGM_EVAL_PREPROCESSING = "dgm-eval: PIL bicubic to 224x224, [0, 1], ImageNet mean/std"
# The official ViT-g/14 checkpoint's SwiGLU layers, as timm's packed GLU names them.
OFFICIAL_TO_TIMM = {".mlp.w12.": ".mlp.fc1.", ".mlp.w3.": ".mlp.fc2."}


@dataclass(frozen=True)
class Extractor:
    name: str
    family: str  # "inception" or "dinov2": the suffix of its metrics' names
    dims: int  # feature dimension of FID/KID/PRC features
    layers: dict[str, str]  # metric -> torch-fidelity feature layer
    preprocessing: str  # what happens to a uint8 image before the network (part of protocols)
    timm_model: str = ""
    official: str = ""  # the official checkpoint's stem (dinov2_vitl14)

    def key(self, metric: str) -> str:
        """The name a metric of this space is recorded under (fid for Inception, fd_dinov2...)."""
        if self.family == "inception":
            return metric
        return {"fid": f"fd_{self.family}"}.get(metric, f"{metric}_{self.family}")

    @property
    def url(self) -> str:
        return f"https://dl.fbaipublicfiles.com/dinov2/{self.official}/{self.official}_pretrain.pth"


EXTRACTORS = {
    EXTRACTOR: Extractor(
        EXTRACTOR,
        "inception",
        2048,
        {"fid": "2048", "kid": "2048", "prc": "2048", "dc": "2048", "is": "logits_unbiased"},
        "torch-fidelity: uint8 at the samples' resolution, TF1 bilinear to 299x299 inside",
    ),
    **{
        name: Extractor(
            name,
            "dinov2",
            dims,
            {"fid": "dinov2", "kid": "dinov2", "prc": "dinov2", "dc": "dinov2"},
            DGM_EVAL_PREPROCESSING,
            timm_model,
            official,
        )
        for name, timm_model, official, dims in (
            ("dinov2-vit-s-14", "vit_small_patch14_dinov2", "dinov2_vits14", 384),
            ("dinov2-vit-b-14", "vit_base_patch14_dinov2", "dinov2_vitb14", 768),
            ("dinov2-vit-l-14", "vit_large_patch14_dinov2", "dinov2_vitl14", 1024),
            ("dinov2-vit-g-14", "vit_giant_patch14_dinov2", "dinov2_vitg14", 1536),
        )
    },
}


def extractor(name: str) -> Extractor:
    from sagan_cli.errors import did_you_mean

    if name not in EXTRACTORS:
        raise SaganError(
            f"Feature extractor '{name}' is not supported.{did_you_mean(name, EXTRACTORS)} "
            f"Choose {', '.join(EXTRACTORS)}."
        )
    return EXTRACTORS[name]


def _timm() -> Any:
    return optional("timm", "timm", "dinov2", "DINOv2 features (the architecture)")


def dinov2_model(spec: Extractor) -> torch.nn.Module:
    """The architecture with freshly initialised weights, sized for 224x224 inputs."""
    return _timm().create_model(spec.timm_model, pretrained=False, num_classes=0, img_size=224)


def _grid_positions(embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + M*M, C) positional embeddings -> (1, 1 + grid*grid, C), as the official model
    interpolates them for its input (bicubic, scale factor (grid + 0.1) / M, no antialias)."""
    cls, patches = embedding[:, :1], embedding[:, 1:]
    side = int(round(patches.shape[1] ** 0.5))
    if side == grid:
        return embedding
    scale = (grid + 0.1) / side
    resized = torch.nn.functional.interpolate(
        patches.float().reshape(1, side, side, -1).permute(0, 3, 1, 2),
        scale_factor=(scale, scale),
        mode="bicubic",
        antialias=False,
    )
    return torch.cat([cls, resized.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def load_dinov2(spec: Extractor, path: Path) -> torch.nn.Module:
    """The architecture with the weights file at ``path`` (official or timm key names)."""
    model = dinov2_model(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"it holds a {type(state).__name__}, not a state dict")
        state = {_timm_key(k): v for k, v in state.items() if k != "mask_token"}  # pretraining only
        if "pos_embed" in state:
            state["pos_embed"] = _grid_positions(state["pos_embed"], 224 // 14)
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise WeightsError(
            f"DINOv2 weights file {path} does not load into {spec.name} "
            f"({describe_exception(exc, 160)}). Use the official {spec.official}_pretrain.pth "
            f"({spec.url})."
        ) from None
    return model


def _timm_key(key: str) -> str:
    """An official checkpoint's key as timm names the same weight."""
    for official, timm_name in OFFICIAL_TO_TIMM.items():
        key = key.replace(official, timm_name)
    return key


def _dinov2_cache(spec: Extractor) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{spec.official}_pretrain.pth"


def resolve_extractor_weights(name: str, option: Path | None = None) -> ExtractorWeights:
    """The weights of extractor ``name``: Inception's by its rules, DINOv2's likewise (option,
    SAGAN_DINOV2_WEIGHTS, torch hub's checkpoint folder, a download), checked by loading."""
    spec = extractor(name)
    if spec.family == "inception":
        return resolve_inception_weights(option)
    _timm()
    if option is not None:
        path, origin = Path(option).expanduser(), "option"
        if not path.is_file():
            raise WeightsError(f"--dinov2-weights {option}: no such file.")
    elif os.environ.get(DINOV2_ENV):
        path, origin = Path(os.environ[DINOV2_ENV]).expanduser(), "environment"
        if not path.is_file():
            raise WeightsError(f"{DINOV2_ENV}={os.environ[DINOV2_ENV]}: no such file.")
    else:
        path, origin = _dinov2_cache(spec), "torch hub cache"
        if not path.is_file():
            try:
                with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    payload = response.read()
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise WeightsError(
                    f"{name} weights are not available: no --dinov2-weights was given, "
                    f"{DINOV2_ENV} is not set, {path} does not exist, and downloading "
                    f"{spec.url} failed ({getattr(exc, 'reason', exc)}). Download that file on a "
                    f"machine with internet and put it at {path}, or pass --dinov2-weights "
                    f"/path/to/{path.name}, or set {DINOV2_ENV}."
                ) from None
            atomic_write(path, lambda handle: handle.write(payload))
            origin = "downloaded"
    load_dinov2(spec, path)  # refuse a wrong file now, not minutes into an evaluation
    return ExtractorWeights(path, file_sha256(path), origin, name)


def build_extractor(weights: ExtractorWeights, layers: list[str]) -> Any:
    """A torch-fidelity feature extractor producing ``layers``."""
    spec = extractor(weights.extractor)
    if spec.family == "inception":
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        return FeatureExtractorInceptionV3(
            EXTRACTOR, layers, feature_extractor_weights_path=str(weights.path)
        )
    from sagan_cli.evaluate.dinov2 import DinoV2Extractor  # imports torch-fidelity

    return DinoV2Extractor(spec.name, load_dinov2(spec, weights.path), layers, dgm_eval_pixels)


def dgm_eval_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, 224, 224) as dgm-eval feeds DINOv2: each image
    resized by PIL's bicubic filter as an RGB image, scaled to [0, 1], ImageNet-normalised."""
    import numpy as np
    from PIL import Image

    resized = [
        np.asarray(
            Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), "RGB").resize(
                (DINOV2_SIZE, DINOV2_SIZE), Image.Resampling.BICUBIC
            )
        )
        for image in images.to(torch.uint8)
    ]
    pixels = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).to(torch.float32) / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std
