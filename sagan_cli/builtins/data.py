"""Built-in data sources: ``shapes`` (embedded default), ``glyphs``, ``image-folder``, ``npz``, ``cifar10``,
``cifar100``. The sources live in ``sagan_cli.datasets`` and are imported when built."""

from __future__ import annotations

from sagan_cli.api import DataContext, DataPlugin, DataSource, Register, hookimpl
from sagan_cli.datasets.params import (
    CifarParams,
    GlyphsParams,
    HuggingFaceParams,
    ImageFolderParams,
    NpzParams,
    PreparedParams,
    ShapesParams,
)


def build_shapes(params: ShapesParams, context: DataContext) -> DataSource:
    from sagan_cli.datasets.shapes import ShapesSource

    return ShapesSource(context.name, params, context.resolution)


def build_glyphs(params: GlyphsParams, context: DataContext) -> DataSource:
    from sagan_cli.datasets.glyphs import GlyphsSource

    return GlyphsSource(context.name, params, context.resolution)


def build_image_folder(params: ImageFolderParams, context: DataContext) -> DataSource:
    from sagan_cli.datasets.files import ImageFolderSource

    return ImageFolderSource(context.name, params, context.resolution)


def build_npz(params: NpzParams, context: DataContext) -> DataSource:
    from sagan_cli.datasets.files import NpzSource

    return NpzSource(context.name, params, context.resolution)


def build_prepared(params: PreparedParams, context: DataContext) -> DataSource:
    from sagan_cli.datasets.prepared import PreparedSource

    return PreparedSource(context.name, params, context.resolution)


def build_huggingface(params: HuggingFaceParams, context: DataContext) -> DataSource:
    from sagan_cli.datasets.huggingface import HuggingFaceSource

    return HuggingFaceSource(context.name, params, context.resolution)


def build_cifar(params: CifarParams, context: DataContext) -> DataSource:
    from sagan_cli.datasets.cifar import CifarSource

    return CifarSource(context.name, params, context.resolution)


PLUGINS = (
    DataPlugin(
        api_version=1,
        name="shapes",
        summary="Procedural mirror-symmetric shapes from a seed; no download; structural score",
        params=ShapesParams,
        factory=build_shapes,
    ),
    DataPlugin(
        api_version=1,
        name="glyphs",
        summary="Procedural twin random glyphs far apart, plus distractors; structural score",
        params=GlyphsParams,
        factory=build_glyphs,
    ),
    DataPlugin(
        api_version=1,
        name="image-folder",
        summary="PNG/JPEG files in a folder (recursive), resized and centre-cropped",
        params=ImageFolderParams,
        factory=build_image_folder,
    ),
    DataPlugin(
        api_version=1,
        name="prepared",
        summary="A data set decoded once by `sagan data prepare`: memory-mapped uint8 shards",
        params=PreparedParams,
        factory=build_prepared,
    ),
    DataPlugin(
        api_version=1,
        name="huggingface",
        summary="A Hugging Face datasets data set: hub name, save_to_disk or parquet folder",
        params=HuggingFaceParams,
        factory=build_huggingface,
    ),
    DataPlugin(
        api_version=1,
        name="npz",
        summary="uint8 images (N, H, W, C) and optional labels in an .npz file",
        params=NpzParams,
        factory=build_npz,
    ),
    *(
        DataPlugin(
            api_version=1,
            name=name,
            summary=f"CIFAR-{classes} through torchvision from a local root (32x32, labelled)",
            params=CifarParams,
            factory=build_cifar,
        )
        for name, classes in (("cifar10", 10), ("cifar100", 100))
    ),
)


@hookimpl
def sagan_register_data(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
