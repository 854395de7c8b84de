"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from testbed import load_factor

from sagan_cli.train.observer import Observer

FIXTURE_PLUGINS = Path(__file__).parent / "fixture_plugins"
REPO = Path(__file__).resolve().parent.parent

# A tiny 32x32 recipe: trains in well under a second per step on a CPU.
TINY_RECIPE = """
name = "tiny"
seed = 0
[data]
source = "shapes"
resolution = 32
num_images = 256
test_images = 128
[model]
g_channels = 4
d_channels = 4
z_dim = 16
attention_layer = [16]
[train]
steps = 6
batch_size = 8
ema_decay = 0.9
ema_start = 0
log_every = 2
sample_every = 3
checkpoint_every = 3
structure_samples = 16
deterministic = true
[eval]
final = false
num_samples = 64
reference_samples = 64
batch_size = 32
"""


def sagan_subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m sagan_cli`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAN_")}
    env["PYTHONPATH"] = os.pathsep.join([str(FIXTURE_PLUGINS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def sagan_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sagan_cli", *args]


def train_with_sets(cli, recipe: Path, root: Path, *sets: str):
    """``sagan train RECIPE --results ROOT --set ...`` through the in-process ``cli`` fixture."""
    args = [a for s in sets for a in ("--set", s)]
    return cli("train", str(recipe), "--results", str(root), *args)


def assert_clean_error(result, *fragments: str) -> str:
    """A user error: exit code 2, no traceback, every fragment in the stderr paragraph."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr
    for fragment in fragments:
        assert fragment in message, message
    return message


def error_paragraph(stderr: str) -> str:
    """The ``Error:`` paragraph alone (``sagan train`` says what it will run before it)."""
    lines = stderr.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    return "".join(lines[starts[0] :]) if starts else stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (but the lock and its owner note) with its content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (".lock", ".lock.owner")
    }


def within(limit_s: float, started: float) -> bool:
    """Whether less than ``limit_s`` (scaled by the load measured now) has passed."""
    return time.monotonic() - started < limit_s * load_factor()


def wait_for(
    condition: Callable[[], bool],
    what: str,
    process: subprocess.Popen | None = None,
    timeout: float = 300.0,
) -> None:
    """Poll until ``condition()`` holds: the event a test waits on. ``timeout`` is only a safety
    limit, scaled by the machine's load while waiting; a ``process`` that ends first fails the
    test at once."""
    started = time.monotonic()
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process exited ({process.returncode}) before {what}")
        if not within(timeout, started):
            if process is not None:
                process.kill()
            pytest.fail(
                f"{what} did not happen within {timeout:.0f} s (x load {load_factor():.1f})"
            )
        time.sleep(0.02)


def finish(process: subprocess.Popen, limit_s: float = 600.0) -> tuple[str, str]:
    """``process.communicate()`` (draining its pipes), with a safety limit scaled by load."""
    started = time.monotonic()
    while True:
        try:
            return process.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            if not within(limit_s, started):
                process.kill()
                out, err = process.communicate()
                pytest.fail(f"{process.args} still ran after {limit_s:.0f} s (x load):\n{err}")


def run_command(
    command: list[str], limit_s: float = 600.0, **kwargs
) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` with a load-scaled limit."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )
    out, err = finish(process, limit_s)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def kill_when(path: Path, process: subprocess.Popen, timeout: float = 300.0) -> None:
    """SIGKILL ``process`` as soon as ``path`` exists (fail if it ends or stalls first)."""
    wait_for(path.exists, f"{path} appeared", process, timeout)
    process.send_signal(signal.SIGKILL)
    process.wait()


class InterruptAt(Observer):
    """Raises KeyboardInterrupt (as Ctrl-C would) once training has advanced to ``step``."""

    def __init__(self, step: int) -> None:
        self.at = step
        self.messages: list[str] = []  # what the run said (a tracker's warning, say)

    def advanced(self, step: int) -> None:
        if step == self.at:
            raise KeyboardInterrupt

    def message(self, text: str) -> None:
        self.messages.append(text)


def assert_bit_exact(resumed: dict, clean: dict) -> None:
    """Two checkpoints hold identical weights, optimiser state, data position, the noise RNG
    and torch's global RNG: a resumed run is the uninterrupted run, bit for bit."""
    for part in ("generator", "discriminator", "ema"):
        for name, tensor in clean[part].items():
            assert torch.equal(tensor, resumed[part][name]), f"{part}.{name}"
    for part in ("opt_g", "opt_d"):
        for index, state in clean[part]["state"].items():
            for key, tensor in state.items():
                assert torch.equal(tensor, resumed[part]["state"][index][key]), (
                    f"{part}[{index}].{key}"
                )
    assert resumed["data_position"] == clean["data_position"]
    assert torch.equal(resumed["noise_rng"], clean["noise_rng"])
    assert torch.equal(resumed["torch_rng"], clean["torch_rng"]), "the global RNG state"


def image_folder(root: Path, per_class: int = 20, classes: int = 2) -> Path:
    """A folder of small random JPEG files, one sub-folder per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
    return root
