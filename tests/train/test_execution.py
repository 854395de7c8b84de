"""How runs execute: compile and layout choices, threads and jobs, FLOP accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sagan_cli.device import select_device
from sagan_cli.execution import COMPILE_BREAK_EVEN_STEPS, plan_execution
from sagan_cli.flops import count_flops
from sagan_cli.plugins import get_registry
from sagan_cli.preflight import auto_jobs
from sagan_cli.recipe import load_recipe
from sagan_cli.results import run_dir_for
from sagan_cli.train.run import train_run

CPU = torch.device("cpu")


def test_flop_count_of_a_tiny_network_is_the_hand_computed_one():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    linear = nn.Linear(8 * 4 * 4, 10, bias=False)
    x = torch.randn(2, 3, 4, 4)
    # conv: 2 FLOPs x batch 2 x 8 outputs x 16 positions x 27 weights; linear: 2 x 2 x 128 x 10
    expected = 2 * 2 * 8 * 16 * 27 + 2 * 2 * 128 * 10
    assert count_flops(lambda: linear(conv(x).flatten(1))) == expected
    # backward doubles it: gradients with respect to inputs and to weights
    y = linear(conv(x.requires_grad_(True)).flatten(1)).sum()
    assert count_flops(y.backward) == 2 * expected


def recipe_with(*sets: str):
    return load_recipe("smoke", list(sets))


def test_auto_compile_never_compiles_a_run_shorter_than_its_break_even():
    for device, break_even in COMPILE_BREAK_EVEN_STEPS.items():
        if break_even is None:  # measured not to pay at any length
            chosen = plan_execution(recipe_with("train.steps=10000000"), torch.device(device))
            assert not chosen.compile and "does not pay" in chosen.reason
            continue
        chosen = plan_execution(recipe_with(f"train.steps={break_even - 1}"), torch.device(device))
        assert not chosen.compile and "fewer than" in chosen.reason
        long_run = recipe_with(f"train.steps={break_even}")
        assert plan_execution(long_run, torch.device(device)).compile
    deterministic = recipe_with("train.steps=10000000", "train.deterministic=true")
    assert not plan_execution(deterministic, torch.device("cuda")).compile
    assert plan_execution(recipe_with("train.compile=true", "train.steps=5"), CPU).compile


def test_auto_layout_per_device_and_explicit_choices():
    assert plan_execution(recipe_with(), torch.device("cuda")).memory_format == "channels_last"
    assert plan_execution(recipe_with(), CPU).memory_format == "channels_last"
    explicit = recipe_with("train.memory_format=contiguous")
    assert plan_execution(explicit, CPU).memory_format == "contiguous"


def losses(tmp_path, tiny_recipe, *sets: str) -> torch.Tensor:
    """(steps, 2) D and G losses of every iteration of a short run."""
    recipe = load_recipe(tiny_recipe, ["train.deterministic=false", "train.log_every=1", *sets])
    run = run_dir_for(tmp_path, recipe.name, recipe)
    assert train_run(recipe, run, select_device("cpu"), get_registry()).status == "done"
    return torch.tensor(
        [(r["d_loss"], r["g_loss"]) for r in run.read_metrics() if r["kind"] == "train"]
    )


def test_the_chosen_defaults_train_like_eager_fp32(tmp_path, tiny_recipe):
    eager = losses(
        tmp_path / "eager", tiny_recipe, "train.compile=false", "train.memory_format=contiguous",
        "train.precision=fp32",
    )  # fmt: skip
    defaults = losses(tmp_path / "defaults", tiny_recipe)
    channels_last = losses(tmp_path / "cl", tiny_recipe, "train.memory_format=channels_last")
    assert torch.equal(defaults, channels_last)  # on CPU the default is channels_last
    # the first iteration is one forward of each net: the equivalence tolerance of the model
    # tests; after that Adam turns rounding into small, bounded differences
    torch.testing.assert_close(defaults[0], eager[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(defaults, eager, rtol=1e-3, atol=1e-3)


def test_jobs_auto_fits_the_machine(monkeypatch):
    from sagan_cli import preflight
    from sagan_cli.cores import Cores

    monkeypatch.setattr(preflight, "read_cores", lambda: Cores(usable=2, load=0.0))
    smoke, cifar = recipe_with(), load_recipe("sagan_cifar10", ["data.root=/nowhere"])
    assert auto_jobs([smoke] * 6, CPU, 6) == (2, 1)  # small runs: one per core, one thread each
    assert auto_jobs([cifar] * 6, CPU, 6) == (1, 2)  # a big run uses both cores
    assert auto_jobs([smoke], CPU, 1) == (1, 2)  # never more jobs than runs to do
    # another process keeps one of the two cores busy: only the free one is shared out
    monkeypatch.setattr(preflight, "read_cores", lambda: Cores(usable=2, load=1.2))
    assert auto_jobs([smoke] * 6, CPU, 6) == (1, 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert auto_jobs([cifar] * 6, torch.device("cuda"), 6) == (4, None)


def test_threads_are_set_and_recorded(cli, tiny_recipe, tmp_path):
    previous = torch.get_num_threads()
    try:
        result = cli("train", str(tiny_recipe), "--threads", "1", "--results", str(tmp_path))
        assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(previous)
    run = next((tmp_path / "tiny" / "runs").iterdir())
    import json

    status = json.loads((run / "status.json").read_text())
    assert status["threads"] == 1
    assert status["execution"] == {
        "compile": False,
        "memory_format": "channels_last",
        "reason": "auto: deterministic runs stay eager",
    }


@pytest.mark.parametrize("value", ["0", "many"])
def test_bad_jobs(cli, tiny_recipe, tmp_path, value):
    from helpers import assert_clean_error

    result = cli(
        "ablate", str(tiny_recipe), "--vary", "attention_layer=[],[16]", "--jobs", value,
        "--results", str(tmp_path),
    )  # fmt: skip
    assert_clean_error(result, "--jobs", "auto")
