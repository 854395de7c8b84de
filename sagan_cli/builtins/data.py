"""Built-in data sources: ``shapes`` (embedded default), ``image-folder``, ``npz``, ``cifar10``,
``cifar100``."""

from __future__ import annotations

from collections.abc import Callable

from sagan_cli.datasets.base import DataSource
from sagan_cli.datasets.cifar import CifarParams, CifarSource
from sagan_cli.datasets.files import ImageFolderParams, ImageFolderSource, NpzParams, NpzSource
from sagan_cli.datasets.shapes import ShapesParams, ShapesSource
from sagan_cli.plugins import DataPlugin, PluginParams, Register, hookimpl


def _factory(cls: type[DataSource], name: str) -> Callable[[PluginParams, int], DataSource]:
    def build(params: PluginParams, resolution: int) -> DataSource:
        return cls(name, params, resolution)

    return build


PLUGINS = (
    DataPlugin(
        name="shapes",
        summary="Procedural mirror-symmetric shapes from a seed; no download; structural score",
        params=ShapesParams,
        factory=_factory(ShapesSource, "shapes"),
    ),
    DataPlugin(
        name="image-folder",
        summary="PNG/JPEG files in a folder (recursive), resized and centre-cropped",
        params=ImageFolderParams,
        factory=_factory(ImageFolderSource, "image-folder"),
    ),
    DataPlugin(
        name="npz",
        summary="uint8 images (N, H, W, C) and optional labels in an .npz file",
        params=NpzParams,
        factory=_factory(NpzSource, "npz"),
    ),
    *(
        DataPlugin(
            name=name,
            summary=f"CIFAR-{classes} through torchvision from a local root (32x32, labelled)",
            params=CifarParams,
            factory=_factory(CifarSource, name),
        )
        for name, classes in (("cifar10", 10), ("cifar100", 100))
    ),
)


@hookimpl
def sagan_register_data(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
