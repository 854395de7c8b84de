"""``sagan bench``: each benchmark runs, writes CSV and Markdown, and never replaces older files."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import assert_clean_error, image_folder


def test_attention_benchmark_compares_fused_and_explicit(cli, tmp_path):
    args = (
        "bench",
        "attention",
        "--sizes",
        "8,16",
        "--channels",
        "16",
        "--batch",
        "2",
        "--repeats",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    )
    first = cli(*args)
    assert first.exit_code == 0, first.output
    (csv_path,) = tmp_path.glob("attention-cpu-fp32-*.csv")
    frame = pd.read_csv(csv_path)
    assert {
        "sagan",
        "sagan (explicit)",
        "sagan_pooled",
        "sagan_pooled (explicit)",
        "residual",
    } <= set(frame.variant)
    assert (frame.ms > 0).all() and (frame.saved_mb > 0).all() and set(frame["size"]) == {8, 16}
    markdown = csv_path.with_suffix(".md").read_text()
    assert "sagan speed-up" in markdown and "Memory kept for backward" in markdown
    assert cli(*args).exit_code == 0
    assert len(list(tmp_path.glob("attention-cpu-fp32-*.csv"))) == 2  # the first is kept


def test_attention_benchmark_runs_bf16_on_a_cpu_only_when_asked_and_able(cli, tmp_path):
    from sagan_cli.device import cpu_has_native_bf16

    args = ("bench", "attention", "--sizes", "8", "--channels", "16", "--batch", "2")
    args += ("--repeats", "1", "--device", "cpu", "--out", str(tmp_path))
    assert cli(*args).exit_code == 0  # the default on a CPU: fp32
    assert cli(*args, "--precision", "bf16").exit_code == 0
    asked = "bf16" if cpu_has_native_bf16() else "fp32"
    names = sorted(p.name.split("-")[2] for p in tmp_path.glob("attention-cpu-*.csv"))
    assert names == sorted(["fp32", asked])


def test_train_benchmark_times_the_recipe_step(cli, tiny_recipe, tmp_path):
    result = cli(
        "bench",
        "train",
        str(tiny_recipe),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    (csv_path,) = tmp_path.glob("train-cpu-fp32-*.csv")
    row = pd.read_csv(csv_path).iloc[0]
    assert row.recipe == "tiny" and row.batch == 8 and row.img_per_s > 0 and row.g_params > 0
    assert "img_per_s" in csv_path.with_suffix(".md").read_text()


def test_train_benchmark_checks_compile_mode(cli, tiny_recipe, tmp_path):
    result = cli(
        "bench", "train", str(tiny_recipe), "--compile", "sometimes", "--out", str(tmp_path)
    )
    assert result.exit_code == 2 and "off, on or both" in result.stderr


@pytest.mark.slow
def test_fid_benchmark_splits_the_time(cli, tiny_recipe, tmp_path, inception_weights):
    result = cli(
        "bench",
        "fid",
        str(tiny_recipe),
        "--num-samples",
        "16",
        "--reference-samples",
        "16",
        "--batch-size",
        "16",
        "--inception-weights",
        str(inception_weights),
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    (csv_path,) = tmp_path.glob("fid-cpu-*.csv")
    row = pd.read_csv(csv_path).iloc[0]
    assert row.num_samples == 16 and row.generate_s >= 0 and row.features_and_fid_s > 0
    assert row.precision == "fp32" and row.fid > 0  # every column lines up with its header


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("bench", "attention", "--sizes", "8,x"), ["--sizes '8,x'", "comma-separated integers"]),
        (("bench", "attention", "--sizes", "0"), ["--sizes '0'", "positive integers"]),
        (("bench", "attention", "--device", "tpu"), ["--device 'tpu'", "cpu, cuda"]),
        (("bench", "attention", "--precision", "fp16"), ["--precision 'fp16'", "bf16 or fp32"]),
        (("train", "smoke", "--device", "cuda:7"), ["--device cuda:7"]),
        (("report", "--format", "xml"), ["--format 'xml'", "table, md, csv, json, latex or html"]),
        (("ablate", "smoke", "--vary", "attention_layer", "--name", "../up"), ["--name '../up'"]),
    ],
)
def test_bad_command_options_are_one_clear_paragraph(cli, tmp_path, args, fragments):
    assert_clean_error(
        cli(
            *args,
            *(("--results", str(tmp_path)) if args[0] in ("train", "report", "ablate") else ()),
        ),
        *fragments,
    )


def test_data_benchmark_compares_the_loader_with_training(cli, tiny_recipe, tmp_path):
    folder = image_folder(tmp_path / "images", per_class=24)
    result = cli(
        "bench", "data", str(tiny_recipe), "--set", "data.source=image-folder",
        "--set", f"data.path={folder}", "--workers", "0,1", "--batches", "2",
        "--device", "cpu", "--out", str(tmp_path / "bench"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (csv,) = (tmp_path / "bench").glob("data-*.csv")
    frame = pd.read_csv(csv)
    assert set(frame["path"]) == {"decode", "pil", "prepare", "prepared", "train"}
    assert (frame["img_per_s"] > 0).all()
    said = result.stdout
    assert ("keeps up" in said) != ("is the bottleneck" in said)
    assert "images/s per worker" in said and "Preparing took" in said
