"""DINOv2 as a torch-fidelity feature extractor. Imported only when features are extracted:
torch-fidelity imports torchvision and torch._dynamo, seconds of every command's start-up."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase


class DinoV2Extractor(FeatureExtractorBase):
    """A locally built DINOv2 behind ``preprocess`` (uint8 images -> its input)."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        layers: list[str],
        preprocess: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__(name, layers)
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        device = next(self.model.parameters()).device
        return (self.model(self.preprocess(x).to(device)).to(torch.float32),)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("dinov2",)
