"""``huggingface``: a data set of the Hugging Face ``datasets`` library (extra ``[hf]``).

``path`` is a hub name (``cifar10``, ``huggan/AFHQv2``), a folder written by
``save_to_disk``, or a folder of parquet files. Images come from the
``image_column`` (an ``Image`` feature), decoded and resized by the same rule as
image folders; labels from the optional ``label_column`` (integers or a
``ClassLabel``). Without a network, a hub data set is read from the local cache
(``~/.cache/huggingface``, or ``HF_HOME``), and the command says so.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from sagan_cli.api import DataSource, ImageSet
from sagan_cli.datasets.params import HuggingFaceParams
from sagan_cli.errors import DataError
from sagan_cli.extras import optional
from sagan_cli.imagefiles import fit


def _datasets() -> Any:
    datasets = optional("datasets", "datasets", "hf", "data.source = 'huggingface'")
    if not sys.stderr.isatty():  # no carriage-return bars in logs
        datasets.disable_progress_bars()
    return datasets


class HuggingFaceImageSet(ImageSet):
    def __init__(self, table: Any, image_column: str, label_column: str | None, resolution: int):
        self.table = table
        self.image_column = image_column
        self.label_column = label_column
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.table[int(index)]
        label = int(row[self.label_column]) if self.label_column else -1
        try:
            return fit(row[self.image_column], self.resolution), label
        except (OSError, ValueError, AttributeError) as exc:
            raise DataError(
                f"Row {index} of the Hugging Face data set has an unreadable image in column "
                f"'{self.image_column}' ({exc})."
            ) from None


HUB_PROBE_S = 3.0  # an unreachable hub is known within this long, not after ~80 s of retries


def offline_reason() -> str | None:
    """Why the hub is not to be asked (the offline variables, or no answer from its endpoint
    within ``HUB_PROBE_S``); None when it answers."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{variable} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    answer: list[str | None] = []

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_S).close()
            answer.append(None)
        except OSError as exc:
            answer.append(f"{host}:{port} does not answer: {exc.strerror or exc}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_S + 0.5)
    return answer[0] if answer else f"{host}:{port} did not answer within {HUB_PROBE_S:g} s"


class HuggingFaceSource(DataSource):
    params: HuggingFaceParams

    def __init__(self, name: str, params: Any, resolution: int) -> None:
        super().__init__(name, params, resolution)
        self._tables: dict[str, Any] = {}

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "test") if self.params.test_split else ("train",)

    def _split_name(self, name: str) -> str:
        return self.params.split if name == "train" else str(self.params.test_split)

    def _table(self, name: str) -> Any:
        if name not in self._tables:
            table = self._load(self._split_name(name))
            self._check_columns(table)
            self._tables[name] = table
        return self._tables[name]

    def _load(self, split: str) -> Any:
        datasets = _datasets()
        params = self.params
        folder = Path(params.path).expanduser()
        try:
            if folder.is_dir():
                if any(folder.glob("*.parquet")) or any(folder.glob("*/*.parquet")):
                    return datasets.load_dataset("parquet", data_dir=str(folder), split=split)
                loaded = datasets.load_from_disk(str(folder))
                if isinstance(loaded, datasets.DatasetDict):
                    if split not in loaded:
                        raise DataError(
                            f"data.path = '{params.path}' has no split '{split}' (it has "
                            f"{', '.join(loaded)}). Set data.split (or data.test_split)."
                        )
                    return loaded[split]
                return loaded
            return self._from_hub(split)
        except DataError:
            raise
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(
                f"data.path = '{params.path}' is not a data set `datasets` can read "
                f"({str(exc).splitlines()[0]}). Give a hub name, a folder written by "
                f"save_to_disk, or a folder of parquet files."
            ) from None

    def _from_hub(self, split: str) -> Any:
        datasets = _datasets()
        params = self.params
        why_offline = offline_reason()
        if why_offline is None:
            try:
                return datasets.load_dataset(params.path, params.name, split=split)
            except (ConnectionError, OSError) as exc:
                why_offline = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # no network: the local cache, if it has the data set (never minutes of retries)
        datasets.config.HF_DATASETS_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
        try:
            table = datasets.load_dataset(params.path, params.name, split=split)
        except Exception:
            raise DataError(
                f"data.path = '{params.path}' could not be downloaded ({why_offline}) and is not "
                f"in the local Hugging Face cache. Download it once where there is a network (it "
                f"is kept in ~/.cache/huggingface, or HF_HOME), or save it with save_to_disk and "
                f"point data.path at that folder."
            ) from None
        sys.stderr.write(
            f"Note: no network; data.path = '{params.path}' is read from the local Hugging Face "
            f"cache.\n"
        )
        return table

    def _check_columns(self, table: Any) -> None:
        datasets = _datasets()
        params = self.params
        columns = list(table.column_names)
        for key, column in (
            ("image_column", params.image_column),
            ("label_column", params.label_column),
        ):
            if column is not None and column not in columns:
                raise DataError(
                    f"data.{key} = '{column}' is not a column of data.path = '{params.path}'; "
                    f"its columns are {', '.join(columns)}. Set data.{key} to one of them."
                )
        feature = table.features[params.image_column]
        if not isinstance(feature, datasets.Image):
            raise DataError(
                f"data.image_column = '{params.image_column}' holds {feature}, not images (a "
                f"datasets.Image feature). Choose the column with the images, or cast it with "
                f"dataset.cast_column('{params.image_column}', datasets.Image())."
            )
        if params.label_column is not None:
            label = table.features[params.label_column]
            integer = isinstance(label, datasets.ClassLabel) or (
                isinstance(label, datasets.Value) and label.dtype.startswith(("int", "uint"))
            )
            if not integer:
                raise DataError(
                    f"data.label_column = '{params.label_column}' holds {label}, not integer "
                    f"class labels. Choose an integer or ClassLabel column, or leave it unset."
                )

    @property
    def num_classes(self) -> int:
        if self.params.label_column is None:
            return 0
        table = self._table("train")
        feature = table.features[self.params.label_column]
        names = getattr(feature, "names", None)
        return len(names) if names else int(max(table[self.params.label_column])) + 1

    @property
    def class_names(self) -> list[str]:
        if self.params.label_column is None:
            return []
        return list(getattr(self._table("train").features[self.params.label_column], "names", []))

    def check(self) -> None:
        for name in self.splits:
            table = self._table(name)
            if len(table) == 0:
                raise DataError(
                    f"The '{self._split_name(name)}' split of {self.params.path} is empty."
                )
        self.split("train")[0]

    def fingerprint(self) -> dict[str, Any]:
        return {
            name: {
                "fingerprint": getattr(self._table(name), "_fingerprint", None),
                "rows": len(self._table(name)),
            }
            for name in self.splits
        }

    def split_size(self, name: str) -> int:
        return len(self._table(name))

    def split(self, name: str) -> ImageSet:
        return HuggingFaceImageSet(
            self._table(name), self.params.image_column, self.params.label_column, self.resolution
        )
