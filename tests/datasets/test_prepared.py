"""Data at scale: `sagan data prepare`, the `prepared` source, one folder walk and one decode per
command, and Hugging Face data sets (built here, offline)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_bit_exact, assert_clean_error, image_folder, within
from PIL import Image

from sagan_cli import imagefiles
from sagan_cli.datasets import files
from sagan_cli.plugins import get_registry
from sagan_cli.prepare import prepare_dataset
from sagan_cli.recipe import load_recipe
from sagan_cli.results import list_runs


@pytest.fixture
def folder(tmp_path) -> Path:
    return image_folder(tmp_path / "images")


def checkpoint(root: Path, step: int = 6) -> dict:
    (run,) = list_runs(root / "tiny")
    return torch.load(run.checkpoints / f"step-{step:08d}.pt", weights_only=True)


def train(cli, recipe: Path, root: Path, *sets: str):
    args = [a for s in sets for a in ("--set", s)]
    return cli("train", str(recipe), "--results", str(root), "--device", "cpu", "-q", *args)


FOLDER = ["data.source=image-folder", "data.labels=true"]


@pytest.mark.parametrize("resident", [True, False])
def test_a_run_on_prepared_data_is_bit_identical_to_the_run_on_the_folder(
    cli, tiny_recipe, tmp_path, folder, monkeypatch, resident
):
    import sagan_cli.train.session

    if not resident:  # the memory-mapped stream instead of one copy in memory
        monkeypatch.setattr(sagan_cli.train.session, "resident_limit", lambda device: 0)
    prepared = cli(
        "data", "prepare", str(folder), str(tmp_path / "prep"), "--resolution", "32", "--labels",
        "--shard-images", "16", "--workers", "2",
    )  # fmt: skip
    assert prepared.exit_code == 0, prepared.output
    manifest = json.loads((tmp_path / "prep" / "prepared.json").read_text())
    assert manifest["splits"]["train"]["count"] == 40 and manifest["num_classes"] == 2
    assert [s["count"] for s in manifest["splits"]["train"]["shards"]] == [16, 16, 8]
    conditional = ["model.conditional=true", "model.norm.features=conditional_batchnorm"]
    on_folder = train(
        cli, tiny_recipe, tmp_path / "a", *FOLDER, f"data.path={folder}", *conditional
    )
    assert on_folder.exit_code == 0, on_folder.output
    on_prepared = train(
        cli,
        tiny_recipe,
        tmp_path / "b",
        "data.source=prepared",
        f"data.path={tmp_path / 'prep'}",
        *conditional,
    )
    assert on_prepared.exit_code == 0, on_prepared.output
    assert_bit_exact(checkpoint(tmp_path / "b"), checkpoint(tmp_path / "a"))


def test_prepare_resumes_after_a_kill_keeping_finished_shards(tiny_recipe, tmp_path, folder):
    recipe = load_recipe(tiny_recipe, [*FOLDER, f"data.path={folder}"])
    from sagan_cli.components import build_data_source

    source = build_data_source(recipe)

    def killed_after_the_first_shard(split: str, done: int, total: int) -> None:
        if done > 16:
            raise KeyboardInterrupt

    out = tmp_path / "prep"
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(source, out, 16, 1, killed_after_the_first_shard)
    first = out / "train-00000.npy"
    kept = first.stat().st_mtime_ns, first.read_bytes()
    assert not (out / "prepared.json").exists() and (out / ".progress.json").exists()
    result = prepare_dataset(source, out, 16, 1)
    assert not result.already and (out / "prepared.json").exists()
    assert (first.stat().st_mtime_ns, first.read_bytes()) == kept  # not decoded again
    assert not list(out.glob(".*"))  # no temp or progress files left
    again = prepare_dataset(source, out, 16, 1)
    assert again.already


def test_a_rerun_verifies_the_shards_and_prepares_a_damaged_one_again(cli, tmp_path, folder):
    out = tmp_path / "prep"
    command = ("data", "prepare", str(folder), str(out), "--resolution", "32", "--labels")
    first = cli(*command, "--shard-images", "16", "--workers", "1")
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / "prepared.json").read_text())
    intact, damaged = out / "train-00000.npy", out / "train-00001.npy"
    kept = intact.stat().st_mtime_ns
    expected = damaged.read_bytes()
    corrupted = bytearray(expected)
    corrupted[-100] ^= 0xFF  # one flipped byte, same size
    damaged.write_bytes(bytes(corrupted))
    rerun = cli(*command)  # the default --shard-images: the folder's own size is kept
    assert rerun.exit_code == 0, rerun.output
    assert "re-prepared 1 damaged or missing file(s): train-00001.npy" in rerun.stderr
    assert "was already prepared" not in rerun.stdout
    assert damaged.read_bytes() == expected and intact.stat().st_mtime_ns == kept
    assert json.loads((out / "prepared.json").read_text())["splits"] == manifest["splits"]
    again = cli(*command)
    assert again.exit_code == 0 and "already prepared (every file verified)" in again.stdout
    (out / "train-labels.npy").unlink()  # the labels lost: the split is prepared again
    relabelled = cli(*command)
    assert relabelled.exit_code == 0, relabelled.output
    assert json.loads((out / "prepared.json").read_text())["splits"] == manifest["splits"]


def test_prepare_refuses_a_folder_with_another_data_set_or_other_files(cli, tmp_path, folder):
    out = tmp_path / "prep"
    assert cli("data", "prepare", str(folder), str(out), "--resolution", "32").exit_code == 0
    other = cli("data", "prepare", str(folder), str(out), "--resolution", "64")
    assert_clean_error(other, "already holds a prepared data set", "another folder")
    cluttered = tmp_path / "cluttered"
    cluttered.mkdir()
    (cluttered / "notes.txt").write_text("mine")
    refused = cli("data", "prepare", str(folder), str(cluttered), "--resolution", "32")
    assert_clean_error(refused, "is not empty")
    assert (cluttered / "notes.txt").read_text() == "mine"


@pytest.fixture
def prepared(cli, tmp_path, folder) -> Path:
    out = tmp_path / "prep"
    result = cli(
        "data", "prepare", str(folder), str(out), "--resolution", "32", "--shard-images", "16"
    )
    assert result.exit_code == 0, result.output
    return out


def test_prepared_data_of_another_resolution_is_refused(cli, tiny_recipe, tmp_path, prepared):
    result = train(
        cli,
        tiny_recipe,
        tmp_path / "r",
        "data.source=prepared",
        f"data.path={prepared}",
        "data.resolution=64",
    )
    assert_clean_error(result, "prepared at 32x32", "data.resolution = 64", "--resolution 64")


def test_a_shard_that_changed_or_was_truncated_is_refused(cli, tiny_recipe, tmp_path, prepared):
    shard = prepared / "train-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    changed = train(
        cli, tiny_recipe, tmp_path / "r", "data.source=prepared", f"data.path={prepared}"
    )
    assert_clean_error(
        changed, "train-00001.npy", "does not match its manifest", "Prepare the data set again"
    )
    shard.write_bytes(bytes(data[:-100]))
    truncated = train(
        cli, tiny_recipe, tmp_path / "r", "data.source=prepared", f"data.path={prepared}"
    )
    assert_clean_error(truncated, "train-00001.npy", "truncated")


def test_one_folder_walk_and_one_decode_per_command(
    cli, tiny_recipe, tmp_path, folder, monkeypatch
):
    from sagan_cli.datasets import base

    walks, decodes = [], []
    scan, decode = imagefiles.scan_images, base._decode
    monkeypatch.setattr(files, "scan_images", lambda root: walks.append(root) or scan(root))
    monkeypatch.setattr(base, "_decode", lambda *args: decodes.append(args) or decode(*args))
    result = cli(
        "ablate", str(tiny_recipe), "--vary", "lr_d=2e-4,4e-4", "--results", str(tmp_path / "r"),
        "--set", "data.source=image-folder", "--set", f"data.path={folder}", "--set", "train.steps=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(walks) == 1  # check, fingerprint, class count and split of two runs share one walk
    assert len(decodes) == 1  # the second run of the process reuses the first one's decode
    again = cli(
        "ablate", str(tiny_recipe), "--vary", "lr_d=2e-4,4e-4", "--results", str(tmp_path / "r"),
        "--set", "data.source=image-folder", "--set", f"data.path={folder}", "--set", "train.steps=2",
    )  # fmt: skip
    assert again.exit_code == 0 and len(walks) == 2  # a new command walks the folder again


def hf_dataset(root: Path) -> Path:
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    images = [Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)) for _ in range(24)]
    table = datasets.Dataset.from_dict(
        {"img": images, "label": [i % 3 for i in range(24)], "caption": ["x"] * 24}
    )
    table = table.cast_column("img", datasets.Image())
    table = table.cast_column("label", datasets.ClassLabel(names=["a", "b", "c"]))
    datasets.DatasetDict({"train": table, "test": table.select(range(8))}).save_to_disk(
        str(root / "saved")
    )
    table.to_parquet(str(root / "parquet" / "part-0.parquet"))
    return root


HF = ["data.source=huggingface", "data.image_column=img", "data.label_column=label"]


def test_a_hugging_face_data_set_trains_and_prepares_like_its_prepared_copy(
    cli, tiny_recipe, tmp_path
):
    root = hf_dataset(tmp_path / "hf")
    conditional = ["model.conditional=true", "model.norm.features=conditional_batchnorm"]
    saved = train(
        cli, tiny_recipe, tmp_path / "a", *HF, f"data.path={root / 'saved'}", *conditional
    )
    assert saved.exit_code == 0, saved.output
    prepare = cli(
        "data", "prepare", str(tiny_recipe), str(tmp_path / "prep"),
        "--set", "data.source=huggingface", "--set", f"data.path={root / 'parquet'}",
        "--set", "data.image_column=img", "--set", "data.label_column=label",
    )  # fmt: skip
    assert prepare.exit_code == 0, prepare.output
    manifest = json.loads((tmp_path / "prep" / "prepared.json").read_text())
    assert manifest["class_names"] == ["a", "b", "c"] and manifest["splits"]["train"]["count"] == 24
    on_prepared = train(
        cli,
        tiny_recipe,
        tmp_path / "b",
        "data.source=prepared",
        f"data.path={tmp_path / 'prep'}",
        *conditional,
    )
    assert on_prepared.exit_code == 0, on_prepared.output
    assert_bit_exact(checkpoint(tmp_path / "b"), checkpoint(tmp_path / "a"))


def test_hugging_face_columns_are_checked(cli, tiny_recipe, tmp_path):
    root = hf_dataset(tmp_path / "hf")
    path = f"data.path={root / 'saved'}"
    missing = train(cli, tiny_recipe, tmp_path / "r", "data.source=huggingface", path)
    assert_clean_error(missing, "data.image_column = 'image'", "img, label, caption")
    text = train(
        cli,
        tiny_recipe,
        tmp_path / "r",
        "data.source=huggingface",
        path,
        "data.image_column=caption",
    )
    assert_clean_error(text, "holds Value('string')", "not images")


def test_an_unreachable_hub_is_known_in_seconds_not_after_minutes_of_retries(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    pytest.importorskip("datasets")
    from testbed import free_port

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    started = time.monotonic()
    result = train(
        cli, tiny_recipe, tmp_path / "r", "data.source=huggingface", "data.path=nobody/no-such-set"
    )
    assert_clean_error(result, "nobody/no-such-set", "does not answer", "local Hugging Face cache")
    assert within(30, started)  # ~80 s of retries before (the limit scales with the load)


def test_hugging_face_offline_without_a_cache_says_so(cli, tiny_recipe, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    get_registry.cache_clear()
    result = train(
        cli, tiny_recipe, tmp_path / "r", "data.source=huggingface", "data.path=nobody/no-such-set"
    )
    assert_clean_error(result, "nobody/no-such-set", "local Hugging Face cache")
