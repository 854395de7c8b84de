"""A newcomer's first day on a shared machine: threads from the free cores, a warning when the
pace falls far behind the estimate, and a CPU run of days refused before any data is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import (
    assert_clean_error,
    run_command,
    sagan_command,
    sagan_subprocess_env,
    wait_for,
)

from sagan_cli.cores import Cores, default_threads
from sagan_cli.train.callbacks import pace


@pytest.fixture
def torch_threads():
    """The test process's torch threads, as they were (a training run in-process sets them)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_come_from_the_free_cores():
    assert default_threads(Cores(usable=8, load=0.3)) == (8, None)
    threads, why = default_threads(Cores(usable=8, load=5.2))
    assert threads == 3 and "5 of 8 cores are busy" in why and "--threads" in why
    assert default_threads(Cores(usable=2, load=16.0))[0] == 1  # never fewer than one


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="measured from Linux's /proc/stat")
def test_a_core_kept_busy_by_another_process_is_measured_busy_now(tmp_path):
    from sagan_cli.cores import busy_cores

    core = min(os.sched_getaffinity(0))
    spinner = subprocess.Popen(
        [sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"]
    )
    try:
        wait_for(lambda: busy_cores({core}) > 0.7, "the pinned process showing as busy", spinner)
    finally:
        spinner.kill()
        spinner.wait()
    # and the measurement is of now: once it stopped, the core is soon idle again (the load
    # average would still count it for a minute)
    wait_for(lambda: busy_cores({core}) < 0.9, "the core idle again")


def test_training_on_busy_cores_takes_the_free_ones_and_says_so(
    cli, tiny_recipe, tmp_path, monkeypatch, torch_threads
):
    from sagan_cli import cores

    monkeypatch.setattr(cores, "busy_cores", lambda cpus: 1000.0)  # other work on every core
    loose = ("--set", "train.deterministic=false")
    result = cli("train", str(tiny_recipe), *loose, "--results", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "cores are busy" in result.stderr and "using 1 thread" in result.stderr
    (status_path,) = tmp_path.glob("*/runs/*/status.json")
    assert json.loads(status_path.read_text())["threads"] == 1
    # --threads given is kept, whatever the load
    again = cli(
        "train", str(tiny_recipe), *loose, "--results", str(tmp_path / "b"), "--device", "cpu",
        "--threads", "2",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "cores are busy" not in again.stderr
    (status_path,) = (tmp_path / "b").glob("*/runs/*/status.json")
    assert json.loads(status_path.read_text())["threads"] == 2


class FakeLoop:
    def __init__(self, steps: int) -> None:
        self.session = SimpleNamespace(
            step=0, recipe=SimpleNamespace(train=SimpleNamespace(steps=steps))
        )
        self.messages: list[str] = []
        self.fields: dict = {}
        self.observer = SimpleNamespace(message=self.messages.append)

    def status(self, **fields) -> None:
        self.fields.update(fields)


def run_pace(monkeypatch, estimated_s: float, measured_s: float, cores: Cores, threads: int):
    clock = [0.0]
    monkeypatch.setattr(pace.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(pace, "read_cores", lambda: cores)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    check, loop = pace.PaceCheck(estimated_s), FakeLoop(steps=1000)
    while check.due(loop.session.step, False):
        loop.session.step += 1
        clock[0] += measured_s
        check.on_step(loop)
    return loop


def test_a_pace_far_behind_the_estimate_names_the_threads_to_use(monkeypatch):
    loop = run_pace(monkeypatch, 0.5, 20.0, Cores(usable=2, load=5.0), threads=2)
    (message,) = loop.messages
    assert "40x slower than estimated" in message and "--threads 1" in message
    assert "5.0 of 2 core(s) busy" in message
    assert loop.fields["pace_warning"] == message  # in status.json too


def test_a_pace_near_the_estimate_says_nothing(monkeypatch):
    loop = run_pace(monkeypatch, 0.5, 1.0, Cores(usable=2, load=5.0), threads=2)
    assert loop.messages == [] and "pace_warning" not in loop.fields


def test_a_cpu_run_of_days_is_refused_off_a_terminal_before_any_data_is_loaded(
    cli, tiny_recipe, tmp_path, torch_threads
):
    result = cli(
        "train", str(tiny_recipe), "--results", str(tmp_path), "--device", "cpu",
        "--set", "train.steps=1000000000",
    )  # fmt: skip
    message = assert_clean_error(result, "Not started", "days", "--yes")
    assert "loading the training images" not in result.output
    assert not list(tmp_path.glob("*/runs/*/checkpoints/*.pt"))
    assert "Traceback" not in message


def test_the_recipe_is_checked_and_the_first_line_printed_before_torch_loads(tmp_path, tiny_recipe):
    # a torch that cannot be imported: whatever is said before it is said without torch
    shim = tmp_path / "shim" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('torch is not loaded in this test')\n")
    env = sagan_subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(shim.parent), env["PYTHONPATH"]])
    base = ["train", str(tiny_recipe), "--results", str(tmp_path / "r"), "--device", "cpu"]
    typo = run_command(sagan_command(*base, "--set", "model.attention.varient=x"), env=env)
    assert typo.returncode == 2
    assert "Did you mean 'variant'" in typo.stderr and "torch is not loaded" not in typo.stderr
    started = run_command(sagan_command(*base), env=env)
    first = started.stderr.splitlines()[0]
    assert first.startswith("train tiny: 6 steps at 32px") and str(tmp_path / "r") in first
    assert "torch is not loaded" in started.stderr  # then torch was needed, and missing


def test_an_ablation_says_how_long_its_grid_takes_before_it_starts(cli, tiny_recipe, tmp_path):
    args = ["ablate", str(tiny_recipe), "--vary", "attention_layer=[],[8],[16]"]
    args += ["--results", str(tmp_path), "--device", "cpu", "--dry-run"]
    quick = cli(*args)
    assert quick.exit_code == 0, quick.output
    assert "estimated time:" in quick.stderr and "for 3 run(s) to train" in quick.stderr
    long = cli(*args, "--set", "train.steps=1000000000")
    assert long.exit_code == 0, long.output
    line = next(x for x in long.stderr.splitlines() if x.startswith("estimated time"))
    assert "days" in line and "sized for GPUs" in long.stderr


def test_the_bars_img_per_s_follows_the_live_pace_not_the_first_log_interval(monkeypatch, tmp_path):
    import io

    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from sagan_cli import console as console_module
    from sagan_cli.results import RunDir

    clock = [0.0]
    monkeypatch.setattr(console_module.time, "monotonic", lambda: clock[0])
    bar = Progress(
        TextColumn("{task.fields[info]}"),
        console=Console(file=io.StringIO(), force_terminal=True),
    )
    observer = console_module.TrainProgress(progress=bar)
    observer.started(RunDir(tmp_path), 0, 1000, "CPU")
    observer.images_per_step(64)
    # the first log interval included warm-up: 1.7 img/s
    observer.logged({"kind": "train", "step": 10, "d_loss": 1.0, "g_loss": 1.0, "img_per_s": 1.7})
    for step in range(11, 60):
        clock[0] += 0.5  # now 2 iterations per second: 128 img/s
        observer.advanced(step)
    info = bar.tasks[0].fields["info"]
    assert "128.0 img/s" in info and "1.7 img/s" not in info, info
    assert "D 1.000" in info


def test_a_deterministic_run_keeps_every_core_whatever_the_load(
    cli, tiny_recipe, tmp_path, monkeypatch, torch_threads
):
    """Its bits depend on the thread count: a busy moment must not change them (nor break a
    bit-exact resume), so the load is said and not followed."""
    from sagan_cli import cores

    monkeypatch.setattr(cores, "busy_cores", lambda cpus: 1000.0)
    usable = cores.read_cores().usable
    result = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    if usable > 1:
        assert "cores are busy" in result.stderr and "train.deterministic" in result.stderr
    (status_path,) = tmp_path.glob("*/runs/*/status.json")
    assert json.loads(status_path.read_text())["threads"] == usable
    assert default_threads(Cores(usable=8, load=6.0), share=2, deterministic=True)[0] == 4
    assert default_threads(Cores(usable=8, load=6.0), share=2)[0] == 1
