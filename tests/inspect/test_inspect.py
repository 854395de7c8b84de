"""Looking inside a run: attention maps and their statistics, sample export, TensorBoard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_clean_error
from PIL import Image

from sagan_cli.inspect.maps import attention_layers, captured_inputs
from sagan_cli.inspect.service import load_run
from sagan_cli.model.sampling import fixed_inputs
from sagan_cli.plugins import get_registry
from sagan_cli.results import list_runs


def one_run(cli, recipe, root, *sets):
    args = [a for s in sets for a in ("--set", s)]
    result = cli("train", str(recipe), "--results", str(root), *args)
    assert result.exit_code == 0, result.output
    (run,) = list_runs(root / "tiny")
    return run


@pytest.fixture
def mirror_run(cli, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "mirror_attention")
    get_registry.cache_clear()
    return one_run(
        cli, tiny_recipe, tmp_path, "model.attention.variant=mirror_attention", "train.steps=2"
    )


def test_hand_built_attention_gives_the_hand_computed_statistics(mirror_run):
    records = [r for r in mirror_run.read_metrics() if r["kind"] == "attention"]
    assert [r["step"] for r in records] == [0, 2]  # with every sample grid (steps 0, 3->2 last)
    for record in records:
        for net in ("g16", "d16"):
            assert record[f"partner_{net}"] == pytest.approx(1.0)
            assert record[f"entropy_{net}"] == pytest.approx(0.0, abs=1e-6)
            # mean over columns c of |2c + 1 - 16| / 16 = (2 * (1 + 3 + ... + 15) / 16) / 16
            assert record[f"distance_{net}"] == pytest.approx(0.5)
            assert f"gamma_{net}" in record


def test_exported_maps_put_all_mass_where_the_layer_attends(cli, mirror_run, tmp_path):
    out = tmp_path / "maps.npz"
    result = cli(
        "attention", str(mirror_run.path), "--format", "npz", "--queries", "3,5;30,31",
        "--num-images", "2", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    maps = np.load(out)
    assert maps["images"].shape == (2, 32, 32, 3) and maps["queries"].tolist()[0] == [
        [3, 5],
        [30, 31],
    ]
    grid = maps["maps_g16"]  # (images, queries, 16, 16)
    assert grid.shape == (2, 2, 16, 16)
    # pixel (3, 5) -> cell (row 2, col 1), mirror col 14; pixel (30, 31) -> (15, 15) -> col 0
    assert np.all(grid[:, 0, 2, 14] == 1.0) and np.all(grid[:, 1, 15, 0] == 1.0)
    assert np.allclose(grid.sum(axis=(2, 3)), 1.0)


def test_exported_maps_are_forward_explicits_beta(cli, tiny_recipe, tmp_path):
    run = one_run(cli, tiny_recipe, tmp_path, "model.attention_layer=[8,16]", "train.steps=3")
    out = tmp_path / "maps.npz"
    result = cli(
        "attention", str(run.path), "--format", "npz", "--queries", "0,0;17,9;31,31",
        "--num-images", "3", "--seed", "4", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    exported = np.load(out)
    loaded = load_run(run.path, "last", "cpu", get_registry(), need_data=False)
    layers = attention_layers(loaded.generator, "g")
    z, _ = fixed_inputs(3, loaded.generator.z_dim, 0, 4)
    with captured_inputs(layers) as inputs, torch.no_grad():
        loaded.generator(z)
    for layer in layers:
        with torch.no_grad():
            _, beta = layer.module.forward_explicit(inputs[layer.name])
        rows = [
            (y * layer.size // 32) * layer.size + x * layer.size // 32
            for x, y in ((0, 0), (17, 9), (31, 31))
        ]
        expected = beta[:, rows].reshape(3, 3, layer.size, layer.size).numpy()
        np.testing.assert_allclose(exported[f"maps_{layer.name}"], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(exported[f"maps_{layer.name}"].sum(axis=(2, 3)), 1.0, atol=1e-5)


def test_the_figure_is_written_and_never_overwritten_silently(cli, mirror_run):
    first = cli("attention", str(mirror_run.path), "--net", "d")
    assert first.exit_code == 0, first.output
    (figure,) = (mirror_run.path / "attention").glob("d-*.png")
    with Image.open(figure) as image:
        assert image.size[0] > 300
    assert "partner share" in first.stdout and "1.000" in first.stdout
    again = cli("attention", str(mirror_run.path), "--net", "d")
    assert_clean_error(again, "already exists", "--force")
    assert cli("attention", str(mirror_run.path), "--net", "d", "--force").exit_code == 0


def test_a_short_run_logs_statistics_for_every_layer_of_both_nets(cli, tiny_recipe, tmp_path):
    run = one_run(cli, tiny_recipe, tmp_path, "model.attention_layer=[8,16]", "train.steps=3")
    record = [r for r in run.read_metrics() if r["kind"] == "attention"][-1]
    for net in ("g8", "g16", "d8", "d16"):
        for field in ("gamma", "distance", "entropy", "partner"):
            assert np.isfinite(record[f"{field}_{net}"]), (field, net)
        assert 0 < record[f"distance_{net}"] < 1.5 and 0 <= record[f"entropy_{net}"] <= 1


def test_ablation_summary_and_plots_carry_the_attention_statistics(cli, tiny_recipe, tmp_path):
    result = cli(
        "ablate", str(tiny_recipe), "--vary", "attention_layer=[8],[16]", "--seeds", "2",
        "--name", "a", "--results", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert summary["attn_distance_n"].tolist() == [2, 2]
    assert summary["attn_partner_mean"].between(0, 1).all()
    run = list_runs(tmp_path / "a")[0]
    last = [r for r in run.read_metrics() if r["kind"] == "attention"][-1]
    layer_values = [v for k, v in last.items() if k.startswith("distance_")]
    row = summary[summary["attention_layer"] == run.read_status()["axis_labels"]["attention_layer"]]
    seeds = [
        np.mean(
            [
                v
                for k, v in [m for m in r.read_metrics() if m["kind"] == "attention"][-1].items()
                if k.startswith("distance_")
            ]
        )
        for r in list_runs(tmp_path / "a")
        if r.read_status()["axis_labels"] == run.read_status()["axis_labels"]
    ]
    assert row["attn_distance_mean"].item() == pytest.approx(np.mean(seeds))
    assert len(layer_values) == 2
    for plot in ("gamma_vs_step.png", "attention_distance_vs_step.png"):
        assert (tmp_path / "a" / plot).stat().st_size > 0
    assert "attn_distance" in (tmp_path / "a" / "summary.md").read_text()


def test_sample_writes_decodable_images_and_the_npz_round_trips(cli, tiny_recipe, tmp_path):
    run = one_run(cli, tiny_recipe, tmp_path, "train.steps=2")
    folder, npz = tmp_path / "pngs", tmp_path / "samples.npz"
    assert (
        cli("sample", str(run.path), "--num", "50", "--out", str(folder), "--seed", "3").exit_code
        == 0
    )
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 50
    decoded = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    assert decoded.shape == (50, 32, 32, 3)
    assert json.loads((folder / "samples.json").read_text())["seed"] == 3
    assert (
        cli("sample", str(run.path), "--num", "50", "--out", str(npz), "--seed", "3").exit_code == 0
    )
    np.testing.assert_array_equal(np.load(npz)["images"], decoded)
    again = tmp_path / "again.npz"
    cli("sample", str(run.path), "--num", "50", "--out", str(again), "--seed", "3")
    np.testing.assert_array_equal(np.load(again)["images"], decoded)  # same seed, same images
    other = tmp_path / "other.npz"
    cli("sample", str(run.path), "--num", "50", "--out", str(other), "--seed", "4")
    assert not np.array_equal(np.load(other)["images"], decoded)


def test_truncated_latents_stay_inside_the_threshold():
    z, _ = fixed_inputs(512, 64, 0, seed=1, truncation=0.5)
    plain, _ = fixed_inputs(512, 64, 0, seed=1)
    assert z.abs().max() <= 0.5 and plain.abs().max() > 2


def test_truncated_latents_follow_the_truncated_normal_for_any_threshold():
    """Drawn in closed form: a threshold of 1e-9 (rejection sampling never finished) is one draw."""
    from scipy import stats

    z, _ = fixed_inputs(4096, 64, 0, seed=2, truncation=1.0)
    expected = stats.truncnorm(-1.0, 1.0)
    assert abs(float(z.std()) - expected.std()) < 0.01 and abs(float(z.mean())) < 0.01
    assert stats.kstest(z.flatten()[:5000].double().numpy(), expected.cdf).pvalue > 1e-3
    tiny, _ = fixed_inputs(16, 8, 0, seed=3, truncation=1e-9)
    assert tiny.abs().max() <= 1e-9
    again, _ = fixed_inputs(16, 8, 0, seed=3, truncation=1e-9)
    assert torch.equal(tiny, again)


def test_truncation_and_attention_outputs_are_checked(cli, tiny_recipe, tmp_path):
    run = one_run(cli, tiny_recipe, tmp_path, "train.steps=2")
    out = str(tmp_path / "s")
    for bad in ("nan", "inf", "-1", "0"):
        result = cli("sample", str(run.path), "--num", "2", "--out", out, "--truncation", bad)
        assert_clean_error(result, f"--truncation {float(bad)}", "positive, finite")
    assert (
        cli("sample", str(run.path), "--num", "2", "--out", out, "--truncation", "1e-9").exit_code
        == 0
    )
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    result = cli("attention", str(run.path), "--out", str(folder), "--force")
    message = assert_clean_error(result, "is a folder", "never a folder")
    assert message.strip().count("\n") == 0 and (folder / "keep.txt").read_text() == "mine"


def test_conditional_samples_are_class_balanced_or_one_class(cli, tiny_recipe, tmp_path):
    run = one_run(
        cli, tiny_recipe, tmp_path, "model.conditional=true",
        "model.norm.features=conditional_batchnorm", "train.steps=2",
    )  # fmt: skip
    out = tmp_path / "s.npz"
    assert cli("sample", str(run.path), "--num", "8", "--out", str(out)).exit_code == 0
    assert np.load(out)["labels"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert (
        cli(
            "sample", str(run.path), "--num", "4", "--out", str(out), "--force", "--class", "2"
        ).exit_code
        == 0
    )
    assert np.load(out)["labels"].tolist() == [2, 2, 2, 2]
    assert_clean_error(
        cli("sample", str(run.path), "--out", str(tmp_path / "x"), "--class", "9"), "classes 0 to 3"
    )


def test_tensorboard_gets_scalars_and_images(cli, tiny_recipe, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = one_run(cli, tiny_recipe, tmp_path, "logging.tensorboard=true")
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/d_loss",
        "train/g_loss",
        "attention/distance_g16",
        "structure/structure",
    } <= scalars
    assert [e.step for e in events.Scalars("train/d_loss")] == [2, 4, 6]
    assert {"samples", "attention/g"} <= set(events.Tags()["images"])


# ---- bad input: one paragraph, exit 2 --------------------------------------------------------------


def test_inspecting_bad_requests(cli, tiny_recipe, tmp_path):
    run = one_run(cli, tiny_recipe, tmp_path, "train.steps=2")
    path = str(run.path)
    assert_clean_error(cli("attention", path, "--layer", "8"), "--layer 8", "[16]")
    assert_clean_error(cli("attention", path, "--queries", "40,3"), "(40, 3)", "outside the 32x32")
    assert_clean_error(cli("attention", path, "--queries", "a,b"), "not x,y")
    assert_clean_error(
        cli("attention", path, "--checkpoint", "step-00000099.pt"),
        "step-00000099.pt",
        "step-00000002.pt",
    )
    assert_clean_error(cli("attention", path, "--num-images", "0"), "--num-images 0")
    assert_clean_error(cli("sample", path, "--num", "0", "--out", str(tmp_path / "s")), "--num 0")
    (tmp_path / "taken").mkdir()
    assert_clean_error(
        cli("sample", path, "--out", str(tmp_path / "taken")), "already exists", "--force"
    )


def test_runs_without_maps_say_so(cli, tiny_recipe, tmp_path):
    none = one_run(cli, tiny_recipe, tmp_path / "a", "model.attention_layer=[]", "train.steps=1")
    assert_clean_error(cli("attention", str(none.path)), "no attention layers")
    residual = one_run(
        cli, tiny_recipe, tmp_path / "b", "model.attention.variant=residual", "train.steps=1"
    )
    assert_clean_error(cli("attention", str(residual.path)), "'residual' has no attention maps")


def test_d_needs_the_runs_data(cli, tiny_recipe, tmp_path):
    data = tmp_path / "real.npz"
    np.savez(
        data, images=np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    )
    run = one_run(
        cli, tiny_recipe, tmp_path, "data.source=npz", f"data.path={data}", "train.steps=1"
    )
    data.unlink()
    assert_clean_error(
        cli("attention", str(run.path), "--net", "d"), "real.npz", "must be readable here"
    )
    assert cli("attention", str(run.path), "--net", "g").exit_code == 0


def test_tensorboard_not_installed(cli, tiny_recipe, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: imports fail
    result = cli("train", str(tiny_recipe), "--tensorboard", "--results", str(tmp_path / "r"))
    assert_clean_error(result, 'pip install "sagan-cli[tensorboard]"')
    assert not (tmp_path / "r").exists()


def test_attention_figures_share_one_colour_scale_with_a_colour_bar():
    from sagan_cli.inspect.figure import LayerMaps, render

    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    queries = torch.tensor([[[8, 8], [20, 20]]] * 2)
    uniform = torch.full((2, 2, 8, 8), 1 / 64)  # a flat layer, next to a peaked one
    peaked = torch.zeros(2, 2, 16, 16)
    peaked[..., 3, 3] = 0.9
    figure = render(
        images, queries, [LayerMaps("g8", 8, uniform), LayerMaps("g16", 16, peaked)], "t"
    )
    maps = [
        image for axis in figure.axes for image in axis.get_images() if image.cmap.name == "inferno"
    ]
    assert len(maps) == 2 * 2 * 2
    assert {image.get_clim() for image in maps} == {(0.0, float(torch.tensor(0.9)))}
    (bar,) = [axis for axis in figure.axes if "one scale" in axis.get_ylabel()]
    marks = sorted(line.get_ydata()[0] for line in bar.get_lines())
    assert marks == pytest.approx([1 / 256, 1 / 64])  # each layer's uniform level


def test_auto_queries_sit_on_the_figure_or_in_the_central_half():
    from sagan_cli.inspect.maps import auto_queries

    figure = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    figure[:, :, 30:46, 36:56] = 200  # an object right of centre on a dark ground
    noise = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    (on_figure,) = auto_queries(figure, 3)
    assert ((on_figure[:, 0] >= 36) & (on_figure[:, 0] < 56)).all()
    assert ((on_figure[:, 1] >= 30) & (on_figure[:, 1] < 46)).all()
    (on_noise,) = auto_queries(noise.to(torch.uint8), 3)  # no figure: not the corners
    assert ((on_noise >= 16) & (on_noise < 48)).all()


def test_sample_grids_enlarge_small_tiles_and_runs_keep_the_real_images_beside_them(
    cli, tiny_recipe, tmp_path
):
    run = one_run(cli, tiny_recipe, tmp_path)
    with Image.open(run.real_grid) as real, Image.open(run.samples / "step-00000006.png") as fake:
        assert real.size == fake.size
        # 8 columns of 32-px tiles enlarged twice, 2-px gaps around each
        assert fake.size[0] == 8 * 64 + 9 * 2
        pixels = np.asarray(fake)
    assert (pixels[:2] == 128).all() and (pixels[:, 66:68] == 128).all()
