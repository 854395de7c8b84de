"""The GPU check (scripts/gpu_check.sh), rehearsed on the CPU so it cannot rot before a GPU
comes: every step runs, every file it promises is written, bad starts are one paragraph."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, run_command

SCRIPT = REPO / "scripts" / "gpu_check.sh"
FILES = {
    "log.txt",
    "ceilings.csv",
    "pytest.csv",
    "correctness.csv",
    "bench_train.csv",
    "bench_attention.csv",
    "training.csv",
    "report.md",
}


def check(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SAGAN_", "OUT"))}
    environment.update({"PYTHON": sys.executable, **env})
    return run_command(["bash", str(SCRIPT), *args], 900, env=environment)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    result = check(
        "--device", "cpu", "--quick", "--out", str(out), "--wheels", str(tmp_path / "none")
    )
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + log
    assert {p.name for p in out.iterdir()} == FILES
    for name in ("ceilings", "correctness", "bench_train", "bench_attention", "training"):
        assert rows(out / f"{name}.csv"), name
    correctness = rows(out / "correctness.csv")
    # the bf16 band is skipped (and says why) only on a CPU without native bf16
    from sagan_cli.device import cpu_has_native_bf16

    skippable = set() if cpu_has_native_bf16() else {"bf16 vs fp32 losses"}
    assert all(
        row["passed"] == "True"
        or (row["check"] in skippable and row["passed"].startswith("skipped: "))
        for row in correctness
    ), correctness
    assert {"fused = explicit attention 4x4 fp32", "fused = explicit attention 8x8 fp32"} <= {
        row["check"] for row in correctness
    }
    training = {row["measure"]: row["value"] for row in rows(out / "training.csv")}
    assert float(training["max |straight - resumed| of EMA G weights"]) == 0.0  # CPU: bit-exact
    assert training["stop exit code"] == "143" and int(training["stopped at step"]) < 40
    report = (out / "report.md").read_text().strip().splitlines()
    table = report[report.index("| check | measured | target | met |") :]
    assert table == report[-len(table) :]  # the report ends with the targets table
    assert any(line.startswith("| pytest -m gpu |") for line in table)
    assert any(line.startswith("| resume in the middle |") and "yes" in line for line in table)


def test_without_wheels_or_an_importable_package_it_names_the_command_that_builds_them(
    tmp_path,
):
    bare = tmp_path / "bare-python"  # a Python without site-packages: nothing of ours imports
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    result = check(
        "--device", "cpu", "--quick", "--out", str(tmp_path / "out"),
        "--wheels", str(tmp_path / "missing"), PYTHON=str(bare),
    )  # fmt: skip
    assert result.returncode == 2
    assert "bash scripts/gpu_wheels.sh" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_device_cuda_without_cuda_is_refused_before_any_work(tmp_path):
    result = check("--out", str(tmp_path / "out"), "--wheels", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and "--device cpu --quick" in result.stderr
    assert not (tmp_path / "out").exists()
