"""Evaluation comparable with the literature: precision/recall, density/coverage, DINOv2 space,
published statistics files, and the evaluation protocol as data (random weights throughout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch_fidelity
from helpers import assert_clean_error
from test_eval import CPU, save_pngs, shapes_source, tiny_generator_samples

from sagan_cli.evaluate import fidelity
from sagan_cli.evaluate.extractors import EXTRACTORS, dinov2_model
from sagan_cli.evaluate.fidelity import density_coverage
from sagan_cli.evaluate.service import Evaluation, reference_from
from sagan_cli.evaluate.weights import resolve_inception_weights
from sagan_cli.results import list_runs

slow = pytest.mark.slow  # InceptionV3 and DINOv2 run at a few images/s on 2 CPU cores


def test_density_and_coverage_follow_their_definition_on_hand_built_points():
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    # k = 1: each real point's radius is the distance to its nearest other real point
    # radii: 1, 1, 1, |(10,10)-(1,0)| = sqrt(181)
    fake = torch.tensor([[0.1, 0.1], [0.2, 0.0], [100.0, 100.0]])
    density, coverage = density_coverage(real, fake, neighborhood=1)
    # (0.1,0.1) is within 1 of (0,0), (1,0) [0.906] and (0,1) [0.906]: 3 balls; (0.2,0) within
    # 1 of (0,0) and (1,0) but not (0,1) [1.02]: 2; neither is within (10,10)'s 13.45 [14.0];
    # (100,100) is in none. Density = 5 hits / (k=1 * 3 fakes); coverage = 3 of 4 reals.
    assert coverage == pytest.approx(3 / 4) and density == pytest.approx(5 / 3)
    far = torch.tensor([[50.0, 50.0]])
    assert density_coverage(real, far, 1) == (0.0, 0.0)


@slow
def test_precision_recall_equal_torch_fidelitys_and_all_metrics_share_one_pass(
    inception_weights, tmp_path, monkeypatch
):
    generated = tiny_generator_samples(24)
    reference = reference_from(shapes_source(num_images=200), "train", 24)
    weights = resolve_inception_weights(inception_weights)
    passes = []
    real_features_of = fidelity.features_of
    monkeypatch.setattr(
        "sagan_cli.evaluate.service.features_of",
        lambda images, *args: passes.append(len(images)) or real_features_of(images, *args),
    )
    monkeypatch.setattr(
        fidelity,
        "features_of",
        lambda images, *args: passes.append(len(images)) or real_features_of(images, *args),
    )
    ours = Evaluation(weights, reference, CPU, batch_size=12, cache_root=tmp_path / "cache").score(
        generated, ["fid", "kid", "prc", "dc"]
    )
    assert passes == [24, 24]  # generated once, reference once: every metric from those
    save_pngs(generated, tmp_path / "generated")
    save_pngs(reference.images.images(), tmp_path / "reference")
    theirs = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "generated"),
        input2=str(tmp_path / "reference"),
        cuda=False,
        prc=True,
        fid=True,
        feature_extractor="inception-v3-compat",  # the evaluation's space (torch-fidelity's prc
        # default is VGG-16, as in Kynkaanniemi et al.; ours shares the FID pass)
        batch_size=12,
        feature_extractor_weights_path=str(inception_weights),
        verbose=False,
        cache=False,
    )
    assert ours["precision"] == pytest.approx(theirs["precision"])
    assert ours["recall"] == pytest.approx(theirs["recall"])
    assert ours["f_score"] == pytest.approx(theirs["f_score"])
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert 0 <= ours["coverage"] <= 1 and ours["density"] >= 0
    assert ours["neighborhoods"] == {"prc": 3, "dc": 5}


@pytest.fixture(scope="module")
def dinov2_weights(tmp_path_factory):
    """DINOv2 ViT-S/14 with freshly initialised weights, saved as a weights file."""
    torch.manual_seed(0)
    model = dinov2_model(EXTRACTORS["dinov2-vit-s-14"])
    path = tmp_path_factory.mktemp("dinov2") / "random-dinov2-vits14.pth"
    torch.save(model.state_dict(), path)
    return path


@slow
def test_fd_in_dinov2_space_is_never_called_fid(cli, tmp_path, inception_weights, dinov2_weights):
    generated = tiny_generator_samples(12)
    save_pngs(generated, tmp_path / "samples")
    save_pngs(
        reference_from(shapes_source(num_images=200), "train", 12).images.images(),
        tmp_path / "real",
    )
    common = (
        "eval",
        "--images",
        str(tmp_path / "samples"),
        "--reference",
        str(tmp_path / "real"),
        "--json",
    )
    dino = cli(
        *common, "--metrics", "fid,prc", "--feature-extractor", "dinov2-vit-s-14",
        "--dinov2-weights", str(dinov2_weights),
    )  # fmt: skip
    assert dino.exit_code == 0, dino.output
    record = json.loads(dino.stdout)
    assert "fid" not in record and record["fd_dinov2"] > 0
    assert {"precision_dinov2", "recall_dinov2"} <= set(record)
    assert record["feature_extractor"]["extractor"] == "dinov2-vit-s-14"
    both = cli(
        *common, "--metrics", "fid", "--feature-extractor", "inception-v3-compat,dinov2-vit-s-14",
        "--dinov2-weights", str(dinov2_weights), "--inception-weights", str(inception_weights),
    )  # fmt: skip
    assert both.exit_code == 0, both.output
    record = json.loads(both.stdout)
    assert record["fid"] > 0 and record["fd_dinov2"] > 0 and record["fid"] != record["fd_dinov2"]
    assert record["protocol"]["extractors"] == ["inception-v3-compat", "dinov2-vit-s-14"]
    no_is = cli(
        *common,
        "--metrics",
        "is",
        "--feature-extractor",
        "dinov2-vit-s-14",
        "--dinov2-weights",
        str(dinov2_weights),
    )
    assert_clean_error(no_is, "IS is defined on Inception")


def test_dinov2_weights_offline_are_one_paragraph(cli, tmp_path, inception_weights):
    pytest.importorskip("timm")
    save_pngs(tiny_generator_samples(4), tmp_path / "samples")
    result = cli(
        "eval", "--images", str(tmp_path / "samples"), "--metrics", "is",
        "--feature-extractor", "dinov2-vit-s-14,inception-v3-compat",
        "--inception-weights", str(inception_weights),
    )  # fmt: skip
    assert_clean_error(
        result,
        "dinov2-vit-s-14 weights are not available",
        "dinov2_vits14_pretrain.pth",
        "SAGAN_DINOV2_WEIGHTS",
    )


@slow
def test_a_statistics_file_reference_gives_the_same_fid_and_records_its_hash(
    cli, tmp_path, inception_weights
):
    generated = tiny_generator_samples(16)
    save_pngs(generated, tmp_path / "samples")
    save_pngs(
        reference_from(shapes_source(num_images=200), "train", 16).images.images(),
        tmp_path / "real",
    )
    weights = ("--inception-weights", str(inception_weights))
    exported = cli(
        "eval", "--recipe", "smoke", "--reference", str(tmp_path / "real"),
        "--export-stats", str(tmp_path / "ours.npz"), *weights,
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    with np.load(tmp_path / "ours.npz") as stats:
        assert stats["mu"].shape == (2048,) and stats["features"].shape == (16, 2048)
        assert str(stats["extractor"]) == "inception-v3-compat"
        np.savez(tmp_path / "ttur.npz", mu=stats["mu"], sigma=stats["sigma"])  # TTUR's format
    base = ("eval", "--images", str(tmp_path / "samples"), "--json", *weights)
    direct = json.loads(
        cli(*base, "--metrics", "fid,kid", "--reference", str(tmp_path / "real")).stdout
    )
    against_ours = cli(*base, "--metrics", "fid,kid", "--reference", str(tmp_path / "ours.npz"))
    assert against_ours.exit_code == 0, against_ours.output
    record = json.loads(against_ours.stdout)
    assert record["fid"] == pytest.approx(direct["fid"], rel=1e-5)
    assert record["kid_mean"] == pytest.approx(direct["kid_mean"], rel=1e-5)
    assert record["reference"]["split"] == "stats" and len(record["reference"]["sha256"]) == 64
    ttur = json.loads(
        cli(*base, "--metrics", "fid", "--reference", str(tmp_path / "ttur.npz")).stdout
    )
    assert ttur["fid"] == pytest.approx(direct["fid"], rel=1e-5)
    needs_features = cli(*base, "--metrics", "fid,kid", "--reference", str(tmp_path / "ttur.npz"))
    assert_clean_error(needs_features, "holds only mu and sigma", "kid")


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"mu": np.zeros(2048)}, "needs arrays 'mu' and 'sigma'"),
        ({"mu": np.zeros(64), "sigma": np.eye(64)}, "2048 dimensions"),
        ({"mu": np.full(2048, np.nan), "sigma": np.eye(2048)}, "NaN or infinite"),
    ],
)
def test_a_broken_statistics_file_is_refused(cli, tmp_path, inception_weights, arrays, fragment):
    save_pngs(tiny_generator_samples(4), tmp_path / "samples")
    np.savez(tmp_path / "stats.npz", **arrays)
    result = cli(
        "eval", "--images", str(tmp_path / "samples"), "--metrics", "fid",
        "--reference", str(tmp_path / "stats.npz"), "--inception-weights", str(inception_weights),
    )  # fmt: skip
    assert_clean_error(result, fragment)


def test_metric_and_extractor_typos_and_too_few_samples_for_prc(cli, tmp_path, inception_weights):
    save_pngs(tiny_generator_samples(3), tmp_path / "samples")
    assert_clean_error(
        cli("eval", "--images", str(tmp_path / "samples"), "--metrics", "fid,prec"),
        "Did you mean 'prc'",
    )
    wrong = cli(
        "eval",
        "--images",
        str(tmp_path / "samples"),
        "--metrics",
        "fid",
        "--feature-extractor",
        "dinov2-vit-l14",
    )
    assert_clean_error(wrong, "Did you mean 'dinov2-vit-l-14'")
    few = cli(
        "eval", "--images", str(tmp_path / "samples"), "--metrics", "prc", "--reference",
        str(tmp_path / "samples"), "--inception-weights", str(inception_weights),
    )  # fmt: skip
    assert_clean_error(few, "prc compares each sample with its 3 nearest neighbours", "more than 3")


@slow
def test_a_report_refuses_runs_of_different_protocols_and_picks_one(
    cli, tiny_recipe, tmp_path, inception_weights
):
    evaluated = ["eval.num_samples=16", "eval.reference_samples=16", "eval.final=true"]
    sets = [a for s in [*evaluated, 'eval.metrics=["fid","prc"]'] for a in ("--set", s)]
    weights = ("--inception-weights", str(inception_weights))
    ablated = cli(
        "ablate", str(tiny_recipe), "--vary", "lr_d=2e-4,4e-4", "--results", str(tmp_path),
        *sets, *weights,
    )  # fmt: skip
    assert ablated.exit_code == 0, ablated.output
    header = (tmp_path / "tiny-lr_d" / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"precision_mean", "recall_verdict", "fid_p_holm"} <= set(header)
    first, _ = list_runs(tmp_path / "tiny-lr_d")
    records = [json.loads(line) for line in first.metrics_path.read_text().splitlines()]
    final = next(r for r in records if r.get("kind") == "eval" and r.get("final"))
    protocol = final["protocol"]
    other = {
        **final,
        "protocol": {**protocol, "id": "0ther000", "label": "50000 samples vs elsewhere"},
    }
    with first.metrics_path.open("a") as handle:  # as if re-evaluated by another protocol
        handle.write(json.dumps(other) + "\n")
    mixed = cli("report", "tiny-lr_d", "--results", str(tmp_path))
    assert_clean_error(mixed, "evaluated with 2 protocols", protocol["label"], "--protocol")
    picked = cli("report", "tiny-lr_d", "--results", str(tmp_path), "--protocol", protocol["id"])
    assert picked.exit_code == 0, picked.output
