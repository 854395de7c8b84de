"""Parameter models of the built-in data sources (pydantic only: registering them stays light)."""

from __future__ import annotations

from pydantic import Field

from sagan_cli.api import PluginParams


class ShapesParams(PluginParams):
    num_images: int = Field(10_000, ge=1, description="images in the train split")
    test_images: int = Field(2_000, ge=1, description="images in the test split")
    max_pairs: int = Field(2, ge=1, le=4, description="mirrored shape pairs per image (1..max)")
    seed: int = Field(0, ge=0, description="data seed, independent of the training seed")


class GlyphsParams(PluginParams):
    num_images: int = Field(10_000, ge=1, description="images in the train split")
    test_images: int = Field(2_000, ge=1, description="images in the test split")
    glyph: int = Field(
        6, ge=2, le=6, description="cells per glyph side (a cell is 1/16 of the image)"
    )
    distractors: int = Field(2, ge=0, le=4, description="distractor shapes per image")
    seed: int = Field(0, ge=0, description="data seed, independent of the training seed")


class ImageFolderParams(PluginParams):
    path: str = Field(description="folder searched recursively for .png/.jpg/.jpeg files")
    labels: bool = Field(False, description="use the first-level sub-folders as class labels")


class NpzParams(PluginParams):
    path: str = Field(description=".npz file holding uint8 images (N, H, W, C)")
    images_key: str = Field("images", description="array holding the images")
    labels_key: str = Field("labels", description="array of integer labels, used when present")


class CifarParams(PluginParams):
    root: str = Field(
        "~/.cache/sagan-cli/datasets", description="folder holding the extracted archive"
    )
    download: bool = Field(False, description="let torchvision download the archive if missing")


class PreparedParams(PluginParams):
    path: str = Field(description="folder written by `sagan data prepare`")


class HuggingFaceParams(PluginParams):
    path: str = Field(
        description="a hub name, a folder written by save_to_disk, or a folder of parquet files"
    )
    name: str | None = Field(None, description="the data set's configuration (hub data sets)")
    split: str = Field("train", description="the split to train on")
    test_split: str | None = Field(None, description="a held-out split (eval.reference = 'test')")
    image_column: str = Field("image", description="column holding the images")
    label_column: str | None = Field(None, description="column of integer class labels")
