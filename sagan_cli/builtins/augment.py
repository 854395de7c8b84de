"""Built-in augmentations: ``none`` (the default) and ``diffaugment`` (Zhao et al., 2020)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from sagan_cli.api import AugmentPlugin, NetworkContext, NoParams, PluginParams, Register, hookimpl

if TYPE_CHECKING:
    from torch import nn

POLICIES = ("color", "translation", "cutout")


class DiffAugmentParams(PluginParams):
    policy: list[str] = Field(
        ["color", "translation", "cutout"],
        description="transforms in order: color (brightness, saturation, contrast), "
        "translation, cutout",
    )
    translation_ratio: float = Field(
        0.125, ge=0, le=0.5, description="largest shift as a share of the image size"
    )
    cutout_ratio: float = Field(
        0.5, gt=0, le=1, description="side of the zeroed square as a share of the image size"
    )

    @field_validator("policy", mode="before")
    @classmethod
    def _from_text(cls, policy: object) -> object:
        """``policy = "color,translation"`` (or a bare word from --set) is a list too."""
        if isinstance(policy, str):
            return [part.strip() for part in policy.split(",") if part.strip()]
        return policy

    @field_validator("policy")
    @classmethod
    def _known(cls, policy: list[str]) -> list[str]:
        unknown = [p for p in policy if p not in POLICIES]
        if unknown:
            raise ValueError(
                f"unknown DiffAugment policy {unknown[0]!r}; choose from {', '.join(POLICIES)}"
            )
        if not policy or len(set(policy)) != len(policy):
            raise ValueError(f"give each of {', '.join(POLICIES)} at most once, at least one")
        return policy


def build_diffaugment(params: DiffAugmentParams, context: NetworkContext) -> nn.Module:
    from sagan_cli.model.augment import DiffAugment

    return DiffAugment(params.policy, params.translation_ratio, params.cutout_ratio)


def build_none(params: NoParams, context: NetworkContext) -> nn.Module:
    from sagan_cli.model.augment import NoAugment

    return NoAugment()


PLUGINS = (
    AugmentPlugin(
        api_version=1,
        name="none",
        summary="No augmentation: D sees the images as they are",
        factory=build_none,
    ),
    AugmentPlugin(
        api_version=1,
        name="diffaugment",
        summary="DiffAugment: differentiable color, translation and cutout on every image D sees",
        params=DiffAugmentParams,
        factory=build_diffaugment,
    ),
)


@hookimpl
def sagan_register_augment(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
