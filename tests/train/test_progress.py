"""What a user sees while a run works: the time estimate before the first step, progress
lines at a steady interval whatever log_every is, and heartbeats through long silences."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from sagan_cli.results import RunDir
from sagan_cli.train import estimate
from sagan_cli.train.observer import LogLines


class LinearG(nn.Module):
    def __init__(self, z_dim: int, out: int) -> None:
        super().__init__()
        self.layer = nn.Linear(z_dim, out)

    def forward(self, z, labels=None):
        return self.layer(z)


class LinearD(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.layer = nn.Linear(features, 1)

    def forward(self, x, labels=None):
        return self.layer(x)


def test_image_flops_count_forward_and_backward_of_both_networks():
    # G: z (16) -> 100, D: 100 -> 1. Forward 2*16*100 + 2*100; backward: D's input and weight
    # gradients (2*100 each), G's weight gradient only (z needs none): 2*16*100.
    flops = estimate.image_flops(LinearG(16, 100), LinearD(100), z_dim=16, conditional=False)
    assert flops == 2 * 16 * 100 + 2 * 100 + 2 * 100 + 2 * 100 + 2 * 16 * 100
    # one D step sees real and fake images (2 passes), the G step one: 2 * d_steps + 1
    assert estimate.iteration_flops(flops, batch=8, d_steps=2) == flops * 8 * 5


def test_the_estimate_reads_as_an_order_of_magnitude_with_advice_when_gpu_sized():
    # 1 TFLOP per iteration x 1000 at half of 1 TFLOP/s = 2000 s
    line = estimate.describe_estimate(10**12, 1000, 1e12, "CPU")
    assert line.startswith("estimated time: about 33 minutes on this CPU")
    assert "GPU" not in line
    long = estimate.describe_estimate(10**12, 100_000, 1e12, "CPU")
    assert "about 2 days" in long and "sized for a GPU" in long and "sagan train smoke" in long
    assert estimate.duration(20) == "about 20 seconds"
    assert estimate.duration(3 * 3600 + 100) == "about 3 hours"


def test_train_says_how_long_it_will_take_before_the_first_step(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    monkeypatch.setattr(estimate, "MIN_STEPS", 1)
    result = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (line,) = [line for line in lines if "estimated time: about" in line]
    started = next(i for i, text in enumerate(lines) if "step 0/6" in text)
    assert lines.index(line) < started
    seconds = float(line.split("about ")[1].split()[0])
    assert "second" in line and 0 < seconds < 600


def recorder(every_s: float) -> tuple[LogLines, list[str]]:
    lines: list[str] = []
    return LogLines(every_s=every_s, write=lines.append), lines


def started(observer: LogLines, total: int) -> None:
    observer.started(RunDir(Path("run")), 0, total, "cpu")


def test_progress_lines_come_at_the_interval_whatever_log_every_is():
    observer, lines = recorder(every_s=0.05)
    started(observer, 100)
    observer.logged({"kind": "train", "step": 1, "d_loss": 1.5, "g_loss": 0.5, "img_per_s": 9})
    for step in range(1, 4):
        time.sleep(0.06)
        observer.advanced(step)
    observer.advanced(4)  # too soon after the last line: nothing
    observer.finished()
    progress = [line for line in lines if "it/s" in line]
    assert [line.split()[2] for line in progress] == ["1/100", "2/100", "3/100"]
    assert all("D 1.500  G 0.500" in line and "ETA" in line for line in progress)
    # the pace is steps since the last progress line over its time (about 1 / 0.06 s)
    rate = float(progress[-1].split()[3])
    assert 1 < rate < 17


def test_a_long_iteration_and_a_long_setup_phase_are_announced():
    observer, lines = recorder(every_s=10)
    observer.HEARTBEAT_S = 0.3
    started(observer, 10)
    observer.advanced(1)
    time.sleep(1.5)
    assert any("iteration 2 still running" in line for line in lines), lines
    observer.finished()
    count = len(lines)
    time.sleep(1.2)
    assert len(lines) == count  # finished: no more heartbeats

    observer, lines = recorder(every_s=10)
    observer.PHASE_FIRST_S = 0.2
    with observer.phase("loading the training images"):
        time.sleep(1.3)
    with observer.phase("a quick phase"):
        pass
    time.sleep(0.5)
    assert any("loading the training images (" in line and "s so far" in line for line in lines)
    assert not any("quick phase" in line for line in lines)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_device_rate_is_measured_in_the_run_precision(precision):
    rate = estimate.device_rate(torch.device("cpu"), precision)
    assert rate > 1e6
