"""The known-answer benchmark's parts: glyphs data, declared partners, the oracle control,
the A/A null control, and `sagan bench known-answer --quick` end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_clean_error, image_folder
from scipy import stats as scipy_stats

from sagan_cli.ablate.null_control import distinct_splits, null_control
from sagan_cli.components import build_data_source, build_networks
from sagan_cli.datasets.glyphs import glyph_window, quadrant_partners, structural_score
from sagan_cli.datasets.shapes import mirror_partners
from sagan_cli.errors import SaganError
from sagan_cli.recipe import resolve_recipe


def glyphs(count: int = 64, resolution: int = 32, **params):
    recipe = resolve_recipe(
        {
            "name": "t",
            "data": {"source": "glyphs", "resolution": resolution, "num_images": count, **params},
        },
        origin="test",
    )
    return build_data_source(recipe)


def shapes(count: int):
    recipe = resolve_recipe({"name": "t", "data": {"num_images": count}}, origin="test")
    return build_data_source(recipe)


# ---- glyphs data ---------------------------------------------------------------------------------


def test_glyphs_are_deterministic_and_prefix_stable():
    small = glyphs(70).split("train").images
    assert torch.equal(small, glyphs(200).split("train").images[:70])
    assert torch.equal(small, glyphs(70).split("train").images)
    assert not torch.equal(small, glyphs(70, seed=1).split("train").images)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_real_glyphs_score_zero_and_their_windows_are_twins_half_filled(resolution):
    images = glyphs(64, resolution).split("train").images
    assert images.shape == (64, 3, resolution, resolution) and images.dtype == torch.uint8
    rows, cols = glyph_window(resolution, 6)
    half = resolution // 2
    first = images[:, :, rows, cols]
    second = images[
        :, :, half + rows.start : half + rows.stop, half + cols.start : half + cols.stop
    ]
    assert torch.equal(first, second)
    assert not torch.equal(first, first.roll(1, dims=0))  # each image draws its own glyph
    assert structural_score(images, 6) == {
        "structure": 0.0,
        "mismatch": 0.0,
        "fill": 0.0,
        "invalidity": 0.0,
    }


def test_glyph_score_sees_unrelated_twins_blank_windows_and_blur():
    images = glyphs(64).split("train").images
    half, (rows, cols) = 16, glyph_window(32, 6)
    unrelated = images.clone()
    second = (slice(None), slice(None), slice(half + rows.start, half + rows.stop))
    unrelated[second + (slice(half + cols.start, half + cols.stop),)] = images.roll(7, dims=0)[
        second + (slice(half + cols.start, half + cols.stop),)
    ]
    assert structural_score(unrelated, 6)["mismatch"] > 0.6  # about chance: no relation left
    blank = images.clone()
    background = images[:, :, :1, :1]
    blank[:, :, rows, cols] = background
    blank[second + (slice(half + cols.start, half + cols.stop),)] = background
    scored = structural_score(blank, 6)
    assert scored["mismatch"] == 0.0 and scored["fill"] == pytest.approx(1.0)
    blurred = F.avg_pool2d(images.float(), 3, stride=1, padding=1).round().to(torch.uint8)
    assert structural_score(blurred, 6)["invalidity"] > 0.1


def test_declared_partners_are_where_real_features_agree():
    """Average-pooled to a feature map, real data is equal at every position and its partner."""
    for source, partners in (
        (glyphs(16), quadrant_partners),
        (shapes(16), mirror_partners),
    ):
        images = source.split("train").images.float()
        for size in (8, 16):
            declared = source.partners(size)
            assert torch.equal(declared, partners(size))
            assert torch.equal(declared[declared], torch.arange(size * size))  # an involution
            features = F.avg_pool2d(images, 32 // size).flatten(2)
            moved = features[:, :, declared]
            if partners is mirror_partners:
                torch.testing.assert_close(moved, features)
            else:  # the glyph windows (with their background margin) agree; distractors need not
                window = torch.zeros(size, size, dtype=torch.bool)
                window[: size // 2, : size // 2] = True
                window[size // 2 :, size // 2 :] = True
                torch.testing.assert_close(
                    moved[..., window.flatten()], features[..., window.flatten()]
                )


# ---- the oracle ----------------------------------------------------------------------------------


def oracle_recipe(source: dict | None = None, **model):
    return resolve_recipe(
        {
            "name": "t",
            "data": source or {"source": "glyphs", "num_images": 16},
            "model": {
                "g_channels": 4,
                "d_channels": 4,
                "z_dim": 8,
                "attention_layer": [16],
                "attention": {"variant": "oracle"},
                **model,
            },
        },
        origin="test",
    )


def test_the_oracle_moves_values_from_exactly_the_declared_partner():
    generator, discriminator = build_networks(oracle_recipe(), 0)
    block = discriminator.attention["16"].eval()  # spectral norm's power iteration stands still
    x = torch.randn(2, block.value.in_channels, 16, 16)
    assert torch.equal(block(x), x)  # gamma 0: the identity at initialisation
    with torch.no_grad():
        block.gamma.fill_(1.0)
    values = block.value(x).flatten(2)
    expected = x + block.out(values[:, :, quadrant_partners(16)].reshape(2, -1, 16, 16))
    torch.testing.assert_close(block(x), expected)
    beta = block.attention_maps(x)
    assert torch.equal(beta.argmax(-1)[0], quadrant_partners(16)) and torch.equal(
        beta.sum(-1), torch.ones(2, 256)
    )


def test_the_oracle_on_data_without_partners_is_one_paragraph(cli, tmp_path):
    folder = image_folder(tmp_path / "images", per_class=4, classes=1)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'name = "r"\n[data]\nsource = "image-folder"\npath = "{folder}"\nresolution = 32\n'
        "[model]\ng_channels = 4\nd_channels = 4\nz_dim = 8\nattention_layer = [16]\n"
        '[model.attention]\nvariant = "oracle"\n[train]\nsteps = 2\nbatch_size = 4\n'
        "[eval]\nfinal = false\n"
    )
    for argv in (
        ("train", str(recipe), "--results", str(tmp_path / "r")),
        ("ablate", str(recipe), "--vary", "attention_layer=[8]", "--results", str(tmp_path / "a")),
    ):
        result = cli(*argv)
        assert_clean_error(result, "oracle", "partners(size)", "declares none", "glyphs")
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").rglob("status.json"))


# ---- the null control ----------------------------------------------------------------------------


def test_a_null_pool_gives_false_positives_near_alpha_in_both_tests():
    rng = np.random.default_rng(1)
    values = {seed: float(v) for seed, v in enumerate(rng.normal(1.0, 0.1, 40))}
    control = null_control(values, "structure", 5, 400, 0.05)
    for found in control.results:
        assert found.experiments == 400
        assert 0.0 <= found.rate <= 0.1, found  # alpha 0.05, a sampling band around it
        expected = scipy_stats.binomtest(found.positives, 400).proportion_ci(method="exact")
        assert found.interval == pytest.approx((expected.low, expected.high))
    assert control.disjoint == 4


def test_the_control_sees_pairing_inflate_false_positives_when_pairs_share_structure():
    """It can fail: values that follow the seed make rank-paired runs alike, and the paired
    test then calls the groups' chance difference real far more often than alpha."""
    rng = np.random.default_rng(2)
    values = {seed: seed + float(rng.normal(0, 0.01)) for seed in range(40)}
    welch, paired = null_control(values, "structure", 5, 200, 0.05).results
    assert welch.test == "welch" and welch.rate <= 0.1
    assert paired.test == "paired" and paired.rate > 0.3


def test_the_null_control_refuses_pools_too_small():
    values = {seed: float(seed) for seed in range(6)}
    with pytest.raises(SaganError, match="need 10"):
        null_control(values, "structure", 5, 10, 0.05)
    with pytest.raises(SaganError, match="distinct experiments"):
        null_control(values, "structure", 3, distinct_splits(6, 3) + 1, 0.05)


# ---- the benchmark, quick ------------------------------------------------------------------------


def test_the_quick_known_answer_benchmark_runs_the_whole_machinery(cli, tmp_path):
    result = cli(
        "bench", "known-answer", "--quick", "--seeds", "2", "--null-seeds", "4",
        "--null-group", "2", "--null-experiments", "3", "--jobs", "1",
        "--results", str(tmp_path / "r"), "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "r" / "attention_known_answer-quick" / "summary.csv")
    assert summary["status"].tolist() == ["2 done"] * 4
    labels = summary["block"].tolist()
    assert "[]" in labels[0]
    assert all(
        v in label for v, label in zip(("residual", "sagan", "oracle"), labels[1:], strict=True)
    )
    assert summary["structure_verdict"].iloc[0] == "baseline"
    assert (
        summary["structure_verdict"]
        .iloc[1:]
        .str.startswith(("better", "worse", "inconclusive"))
        .all()
    )
    # the partner statistic follows the data's declared partners: the oracle looks only there,
    # SAGAN after 4 steps is still about uniform (1/256)
    partner = dict(zip(labels, summary["attn_partner_mean"], strict=True))
    assert partner[labels[3]] == pytest.approx(1.0)
    assert 0.5 / 256 < partner[labels[2]] < 2 / 256
    (report,) = (tmp_path / "b").glob("known-answer-*.md")
    text = report.read_text()
    assert "A/A false positives" in text and "Known answer reproduced" in text
    (frame,) = (tmp_path / "b").glob("known-answer-*.csv")
    assert pd.read_csv(frame)["experiments"].tolist() == [3, 3]
