"""Built-in normalizations: weight norms ``spectral``/``none``, feature norms for G."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from sagan_cli.api import (
    LayerContext,
    NetworkContext,
    NoParams,
    NormalizationPlugin,
    PluginParams,
    Register,
    WeightNorm,
    hookimpl,
)

if TYPE_CHECKING:
    from torch import nn


class SpectralParams(PluginParams):
    power_iterations: int = Field(1, ge=1, description="power iterations per training forward")
    eps: float = Field(1e-12, gt=0, description="numerical floor in the normalisation")


class BatchNormParams(PluginParams):
    momentum: float = Field(0.1, gt=0, le=1, description="running-statistics momentum")
    eps: float = Field(1e-5, gt=0)


def build_spectral(params: SpectralParams, context: NetworkContext) -> WeightNorm:
    from torch.nn.utils.parametrizations import spectral_norm

    def wrap(layer: nn.Module) -> nn.Module:
        return spectral_norm(layer, n_power_iterations=params.power_iterations, eps=params.eps)

    return wrap


def build_no_weight_norm(params: NoParams, context: NetworkContext) -> WeightNorm:
    return lambda layer: layer


def build_batchnorm(params: BatchNormParams, context: LayerContext) -> nn.Module:
    from sagan_cli.model.norms import BatchNorm2d

    return BatchNorm2d(context.channels, momentum=params.momentum, eps=params.eps)


def build_identity(params: NoParams, context: LayerContext) -> nn.Module:
    from sagan_cli.model.norms import NoFeatureNorm

    return NoFeatureNorm()


def build_conditional_batchnorm(params: BatchNormParams, context: LayerContext) -> nn.Module:
    from sagan_cli.model.norms import ConditionalBatchNorm2d

    return ConditionalBatchNorm2d(
        context.channels, context.num_classes, params.momentum, params.eps
    )


PLUGINS = (
    NormalizationPlugin(
        api_version=1,
        name="spectral",
        summary="Spectral normalization of every layer's weight (Miyato et al., 2018)",
        params=SpectralParams,
        factory=build_spectral,
        target="weight",
    ),
    NormalizationPlugin(
        api_version=1,
        name="none",
        summary="No weight normalization",
        factory=build_no_weight_norm,
        target="weight",
    ),
    NormalizationPlugin(
        api_version=1,
        name="batchnorm",
        summary="Batch normalization in G's blocks (unconditional)",
        params=BatchNormParams,
        factory=build_batchnorm,
        target="feature",
    ),
    NormalizationPlugin(
        api_version=1,
        name="identity",
        summary="No feature normalization in G (for studying BN's role, or exact multi-rank runs)",
        factory=build_identity,
        target="feature",
    ),
    NormalizationPlugin(
        api_version=1,
        name="conditional_batchnorm",
        summary="Class-conditional batch norm in G's blocks (needs labelled data)",
        params=BatchNormParams,
        factory=build_conditional_batchnorm,
        target="feature",
        conditional=True,
    ),
)


@hookimpl
def sagan_register_normalization(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
