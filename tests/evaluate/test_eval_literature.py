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
from sagan_cli.evaluate.reference import reference_from
from sagan_cli.evaluate.scoring import Evaluation
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
        "sagan_cli.evaluate.scoring.features_of",
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
    """DINOv2 ViT-S/14 with freshly initialised weights, saved as a weights file.

    Its layer scales start at 1e-5, which leaves every block about the identity and every
    image about the same class token; at 1 the features depend on the image.
    """
    torch.manual_seed(0)
    model = dinov2_model(EXTRACTORS["dinov2-vit-s-14"])
    for name, parameter in model.named_parameters():
        if name.endswith(".gamma"):
            parameter.data.fill_(1.0)
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


# ---- the protocol id: it changes whenever a number would -------------------------------------


def _weights(extractor: str, sha: str):
    from pathlib import Path

    from sagan_cli.evaluate.weights import ExtractorWeights

    return ExtractorWeights(Path(f"/weights/{sha}.pth"), sha * 8, "option", extractor)


def _protocol_id(weights=None, reference=None, num_samples=100, options=None) -> str:
    evaluation = Evaluation(
        weights or [_weights("inception-v3-compat", "aaaa")],
        reference if reference is not None else reference_from(shapes_source(), "train", 64),
        CPU,
        8,
        options=options or fidelity.MetricOptions(3, 5),
    )
    return evaluation.protocol(num_samples)["id"]


def test_the_protocol_id_changes_with_every_field_that_changes_a_number(tmp_path, monkeypatch):
    from sagan_cli.datasets.files import ImageFolderSource
    from sagan_cli.datasets.params import ImageFolderParams
    from sagan_cli.evaluate import scoring

    base = _protocol_id()
    assert base == _protocol_id()  # a function of its fields alone
    for folder in ("a", "b"):
        save_pngs(tiny_generator_samples(4), tmp_path / folder)
    by_path = [
        _protocol_id(
            reference=reference_from(
                ImageFolderSource("image-folder", ImageFolderParams(path=str(tmp_path / f)), 32),
                "train",
                4,
            )
        )
        for f in ("a", "b")
    ]
    changed = {
        "canonical vs random weights": _protocol_id(
            weights=[_weights("inception-v3-compat", "bbbb")]
        ),
        "sample count": _protocol_id(num_samples=200),
        "reference size": _protocol_id(reference=reference_from(shapes_source(), "train", 32)),
        "reference data": _protocol_id(
            reference=reference_from(shapes_source(seed=1), "train", 64)
        ),
        "reference split": _protocol_id(reference=reference_from(shapes_source(), "test", 64)),
        "precision/recall k": _protocol_id(options=fidelity.MetricOptions(4, 5)),
        "density/coverage k": _protocol_id(options=fidelity.MetricOptions(3, 6)),
        "another extractor": _protocol_id(weights=[_weights("dinov2-vit-s-14", "aaaa")]),
        "folder path": by_path[0],
    }
    assert by_path[0] != by_path[1]  # two folders of the same images are two references
    monkeypatch.setattr(scoring, "torch_fidelity_version", lambda: "0.0.1")
    changed["torch-fidelity version"] = _protocol_id()
    monkeypatch.undo()
    assert base not in changed.values(), changed
    assert len(set(changed.values())) == len(changed), changed


@pytest.mark.slow
def test_a_record_of_an_older_protocol_is_shown_as_such_and_never_merged(
    cli, tiny_recipe, tmp_path, inception_weights
):
    evaluated = ["eval.num_samples=4", "eval.reference_samples=4", "eval.final=true"]
    sets = [a for s in [*evaluated, 'eval.metrics=["fid"]'] for a in ("--set", s)]
    ablated = cli(
        "ablate", str(tiny_recipe), "--vary", "lr_d=2e-4,4e-4", "--results", str(tmp_path),
        *sets, "--inception-weights", str(inception_weights),
    )  # fmt: skip
    assert ablated.exit_code == 0, ablated.output
    first, _ = list_runs(tmp_path / "tiny-lr_d")
    records = [json.loads(line) for line in first.metrics_path.read_text().splitlines()]
    final = next(r for r in records if r.get("kind") == "eval" and r.get("final"))
    legacy = {
        "id": "0a3b0c3d",  # 0.3's id of the same evaluation: fewer fields, another hash
        "label": final["protocol"]["label"],
        "num_samples": final["protocol"]["num_samples"],
    }
    with first.metrics_path.open("a") as handle:  # 0.3 wrote ids without weights and k
        handle.write(json.dumps({**final, "protocol": legacy}) + "\n")
    mixed = cli("report", "tiny-lr_d", "--results", str(tmp_path))
    assert_clean_error(mixed, "evaluated with 2 protocols", "(0.3, cannot be recomputed)")
    picked = cli("report", "tiny-lr_d", "--results", str(tmp_path), "--protocol", legacy["id"])
    assert picked.exit_code == 0, picked.output


# ---- FD_DINOv2 as dgm-eval computes it ---------------------------------------------------------


def _dgm_eval_transform():
    """dgm-eval's DINOv2 transform, written out independently: torchvision on PIL images."""
    import torchvision.transforms as T

    return T.Compose(
        [
            T.Resize((224, 224), T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


def _pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB")


def test_dinov2_inputs_are_dgm_evals_pil_bicubic_224_with_imagenet_normalisation():
    from sagan_cli.evaluate.extractors import dgm_eval_pixels

    images = tiny_generator_samples(3)
    expected = torch.stack([_dgm_eval_transform()(_pil(image)) for image in images])
    ours = dgm_eval_pixels(images)
    assert ours.shape == (3, 3, 224, 224) and ours.dtype == torch.float32
    assert torch.allclose(ours, expected, atol=1e-6), float((ours - expected).abs().max())
    # not torch-fidelity's TF1 bilinear resize, which 0.3 used (it differs by ~0.16 on average)
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    bilinear = interpolate_bilinear_2d_like_tensorflow1x(
        images.float(), size=(224, 224), align_corners=False
    )
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    assert (((bilinear / 255 - mean) / std) - expected).abs().mean() > 1e-2


@slow
def test_fd_dinov2_equals_an_independent_dgm_eval_style_computation(dinov2_weights):
    from scipy import linalg

    from sagan_cli.evaluate.extractors import resolve_extractor_weights

    generated = tiny_generator_samples(24)
    reference = reference_from(shapes_source(num_images=200), "train", 24)
    weights = resolve_extractor_weights("dinov2-vit-s-14", dinov2_weights)
    ours = Evaluation([weights], reference, CPU, 8).score(generated, ["fid"])["fd_dinov2"]

    model = dinov2_model(EXTRACTORS["dinov2-vit-s-14"])  # the same backbone weights
    model.load_state_dict(torch.load(dinov2_weights, weights_only=True))
    model.eval()
    transform = _dgm_eval_transform()

    def features(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            batch = torch.stack([transform(_pil(image)) for image in images])
            return model(batch).double().numpy()

    a, b = features(generated), features(reference.images.images())
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sigma_a @ sigma_b).real
    independent = float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a + sigma_b - 2 * root))
    assert ours == pytest.approx(independent, rel=1e-5)


def test_the_official_vit_g14_swiglu_keys_load_into_timms_packed_layers(tmp_path, monkeypatch):
    """The official ViT-g/14 checkpoint names its SwiGLU layers mlp.w12 and mlp.w3; timm packs
    the same weights as mlp.fc1 and mlp.fc2 (a 2-block, 96-wide g/14 stands in for 1.1B parameters)."""
    timm = pytest.importorskip("timm")
    from sagan_cli.evaluate import extractors

    def small_giant(spec):
        return timm.create_model(
            spec.timm_model, pretrained=False, num_classes=0, img_size=224,
            embed_dim=96, depth=2, num_heads=2,
        )  # fmt: skip

    monkeypatch.setattr(extractors, "dinov2_model", small_giant)
    spec = EXTRACTORS["dinov2-vit-g-14"]
    torch.manual_seed(0)
    model = small_giant(spec)
    official = {
        k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v
        for k, v in model.state_dict().items()
    }
    assert any(".mlp.w12." in k for k in official)
    path = tmp_path / "dinov2_vitg14_pretrain.pth"
    torch.save(official, path)
    loaded = extractors.load_dinov2(spec, path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))


# ---- one request, resolved one way for runs, folders and exports ------------------------------


def test_reference_samples_mean_the_same_for_runs_folders_and_exports(tmp_path):
    """0 is every image everywhere (it was the recipe's 10,000 for runs and --images); unset is
    the recipe's count for its splits and every image of a folder or file."""
    from sagan_cli.evaluate.service import EvalRequest
    from sagan_cli.recipe import resolve_recipe

    recipe = resolve_recipe({"name": "t", "eval": {"reference_samples": 300}}, origin="t")
    every = EvalRequest(reference_samples=0)
    assert every.reference_count("train", recipe) == 0
    assert every.reference_count(str(tmp_path), recipe) == 0
    unset = EvalRequest()
    assert unset.reference_count("test", recipe) == 300
    assert unset.reference_count(str(tmp_path / "real"), recipe) == 0  # a folder: all of it
    assert unset.reference_count(str(tmp_path / "real"), None) == 0
    assert EvalRequest(reference_samples=7).reference_count("train", recipe) == 7
    whole = reference_from(
        shapes_source(num_images=90), "train", every.reference_count("train", recipe)
    )
    assert whole.size == 90


def test_export_stats_of_a_folder_needs_no_recipe_and_takes_the_whole_folder(
    cli, tmp_path, inception_weights
):
    save_pngs(tiny_generator_samples(5), tmp_path / "real")
    exported = cli(
        "eval", "--reference", str(tmp_path / "real"), "--export-stats",
        str(tmp_path / "ref.npz"), "--inception-weights", str(inception_weights),
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    with np.load(tmp_path / "ref.npz") as stats:
        assert stats["features"].shape == (5, 2048)
    split = cli("eval", "--reference", "train", "--export-stats", str(tmp_path / "s.npz"))
    assert_clean_error(split, "--reference train names a split of a recipe's data", "--recipe")
    nothing = cli("eval", "--export-stats", str(tmp_path / "n.npz"))
    assert_clean_error(nothing, "give --reference")


@pytest.mark.parametrize(
    "arrays, fragments",
    [
        ({"mean": np.zeros(4), "cov": np.eye(4)}, ["neither statistics nor images", "mean"]),
        ({}, ["neither statistics nor images", "its arrays: none"]),
        (None, ["is not a readable .npz file"]),
    ],
)
def test_a_statistics_file_that_is_not_one_says_what_one_holds(
    cli, tmp_path, inception_weights, arrays, fragments
):
    save_pngs(tiny_generator_samples(3), tmp_path / "samples")
    path = tmp_path / "reference.npz"
    if arrays is None:
        path.write_bytes(b"not a zip archive at all")
    else:
        np.savez(path, **arrays)
    result = cli(
        "eval", "--images", str(tmp_path / "samples"), "--reference", str(path),
        "--inception-weights", str(inception_weights), "--metrics", "fid",
    )  # fmt: skip
    message = assert_clean_error(result, *fragments, "'mu' (D,) and 'sigma' (D, D)")
    assert "images_key" not in message  # it was read as an image file


def test_the_default_neighbourhoods_are_torch_fidelitys_and_the_recipes():
    from torch_fidelity.defaults import DEFAULTS

    from sagan_cli.evaluate.fidelity import MetricOptions
    from sagan_cli.recipe import EvalConfig

    assert MetricOptions().prc_neighborhood == DEFAULTS["prc_neighborhood"]
    assert EvalConfig().prc_neighborhood == MetricOptions().prc_neighborhood
    assert EvalConfig().dc_neighborhood == MetricOptions().dc_neighborhood
