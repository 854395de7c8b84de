"""DiffAugment (an ``augment`` plugin): each transform against its definition, gradients through
it, seeded repeatability, and its place in training (resume, ablation axis, bad input)."""

from __future__ import annotations

import pytest
import torch
from helpers import InterruptAt, assert_bit_exact, assert_clean_error

from sagan_cli.components import augment_generator
from sagan_cli.device import select_device
from sagan_cli.model.augment import (
    DiffAugment,
    brightness,
    contrast,
    cutout,
    saturation,
    translation,
)
from sagan_cli.plugins import get_registry
from sagan_cli.recipe import load_recipe
from sagan_cli.results import list_runs, run_dir_for
from sagan_cli.train.run import train_run


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_translation_shifts_by_whole_pixels_and_pads_with_zeros():
    images = torch.rand(16, 3, 16, 16) + 1  # every pixel nonzero: padding shows as 0
    shifted = translation(images, generator(), ratio=0.25)
    for image, out in zip(images, shifted, strict=True):
        found = []
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                expected = torch.zeros_like(image)
                ys, xs = slice(max(dy, 0), 16 + min(dy, 0)), slice(max(dx, 0), 16 + min(dx, 0))
                source = image[:, max(-dy, 0) : 16 - max(dy, 0), max(-dx, 0) : 16 - max(dx, 0)]
                expected[:, ys, xs] = source
                if torch.equal(out, expected):
                    found.append((dy, dx))
        assert len(found) == 1  # exactly one shift within +-ratio*size explains the output
    assert len({tuple(torch.nonzero(o[0] == 0).shape) for o in shifted}) > 1  # shifts vary


def test_cutout_zeroes_a_square_of_the_stated_share_inside_the_image():
    images = torch.rand(32, 3, 16, 16) + 1
    cut = cutout(images, generator(), ratio=0.5)
    holes = cut[:, 0] == 0
    assert torch.all(holes.flatten(1).sum(1) == 8 * 8)  # (ratio * size)^2 pixels, always inside
    for hole in holes:
        rows, cols = torch.nonzero(hole, as_tuple=True)
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
    assert torch.equal(
        cut[~holes[:, None].expand_as(cut)], images[~holes[:, None].expand_as(images)]
    )


def test_colour_transforms_stay_within_their_ranges():
    images = torch.rand(256, 3, 8, 8) * 2 - 1
    moved = brightness(images, generator()) - images  # one constant per image in [-0.5, 0.5)
    assert torch.allclose(moved, moved[:, :1, :1, :1].expand_as(moved), atol=1e-6)
    assert moved.min() >= -0.5 and moved.max() < 0.5 and moved.std() > 0.2
    mean = images.mean(dim=1, keepdim=True)
    factor = (saturation(images, generator()) - mean) / (images - mean)
    per_image = factor.flatten(1).median(1).values
    assert per_image.min() >= 0 and per_image.max() < 2  # a factor in [0, 2) per image
    centre = images.mean(dim=(1, 2, 3), keepdim=True)
    stretch = (
        ((contrast(images, generator()) - centre) / (images - centre)).flatten(1).median(1).values
    )
    assert stretch.min() >= 0.5 and stretch.max() < 1.5  # a factor in [0.5, 1.5) per image


def test_diffaugment_is_differentiable_and_repeats_for_a_seed():
    augment = DiffAugment(["color", "translation", "cutout"], 0.125, 0.5)
    images = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_(True)
    out = augment(images, generator(7))
    assert out.shape == images.shape and torch.equal(out, augment(images, generator(7)))
    assert not torch.equal(out, augment(images, generator(8)))
    (grad,) = torch.autograd.grad(out.square().sum(), images)
    assert torch.isfinite(grad).all() and (grad != 0).float().mean() > 0.5
    seeded = augment_generator(torch.device("cpu"), 0, 5, "d", 0, 0)
    again = augment_generator(torch.device("cpu"), 0, 5, "d", 0, 0)
    assert torch.equal(seeded.get_state(), again.get_state())


def test_an_augmented_run_resumes_bit_exact(tiny_recipe, tmp_path):
    overrides = ["train.augment=diffaugment", "train.steps=6", "train.checkpoint_every=3"]
    recipe = load_recipe(tiny_recipe, overrides)
    registry, device = get_registry(), select_device("cpu")
    clean = train_run(recipe, run_dir_for(tmp_path / "clean", "tiny", recipe), device, registry)
    assert clean.status == "done"
    resumed_run = run_dir_for(tmp_path / "resumed", "tiny", recipe)
    assert train_run(recipe, resumed_run, device, registry, InterruptAt(4)).status == "interrupted"
    assert train_run(recipe, resumed_run, device, registry).status == "done"
    load = lambda run: torch.load(run.checkpoints / "step-00000006.pt", weights_only=True)  # noqa: E731
    assert_bit_exact(load(resumed_run), load(clean.run))
    plain = train_run(
        load_recipe(tiny_recipe, overrides[1:]),
        run_dir_for(tmp_path / "plain", "tiny", load_recipe(tiny_recipe, overrides[1:])),
        device,
        registry,
    )
    assert not torch.equal(  # the augmentation changed what D saw, hence the weights
        load(plain.run)["discriminator"]["linear.parametrizations.weight.original"],
        load(clean.run)["discriminator"]["linear.parametrizations.weight.original"],
    )


def test_augment_is_an_ablation_axis(cli, tiny_recipe, tmp_path):
    result = cli(
        "ablate", str(tiny_recipe), "--vary", "augment=none,diffaugment", "--results", str(tmp_path),
        "--set", "train.steps=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = list_runs(tmp_path / "tiny-augment")
    assert sorted(r.read_status()["axis_labels"]["augment"] for r in runs) == [
        "diffaugment",
        "none",
    ]


def test_an_unknown_policy_is_bad_input(cli, tiny_recipe, tmp_path):
    result = cli(
        "train", str(tiny_recipe), "--set", "train.augment=diffaugment",
        "--set", "train.augment.policy=color,blur", "--results", str(tmp_path),
    )  # fmt: skip
    assert_clean_error(result, "train.augment.policy", "'blur'", "color, translation, cutout")


@pytest.fixture
def detaching_augment(monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "detaching_augment")
    get_registry.cache_clear()


def test_an_augmentation_that_blocks_gradients_is_refused_before_training(
    cli, tiny_recipe, tmp_path, detaching_augment
):
    result = cli(
        "train", str(tiny_recipe), "--set", "train.augment=detaching", "--results", str(tmp_path)
    )
    assert_clean_error(result, "augment plugin 'detaching'", "not differentiable")
    run = next(iter(list_runs(tmp_path / "tiny")))
    assert run.read_status()["status"] != "running" and not list(run.checkpoints.glob("*.pt"))
    checked = cli("plugins", "check", "detaching")
    assert_clean_error(checked, "not differentiable")
