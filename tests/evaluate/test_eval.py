"""Evaluation: our numbers equal torch-fidelity's, the reference cache, and offline weights.

All tests use a randomly initialised Inception (the ``inception_weights`` fixture):
the values are meaningless as image quality but exact as arithmetic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch_fidelity
from helpers import assert_clean_error
from PIL import Image

from sagan_cli.components import build_data_source, build_networks
from sagan_cli.evaluate.reference import reference_from
from sagan_cli.evaluate.scoring import Evaluation
from sagan_cli.evaluate.weights import cached_weights_path, file_sha256, resolve_inception_weights
from sagan_cli.model.sampling import sample_images
from sagan_cli.recipe import resolve_recipe

CPU = torch.device("cpu")
inception_runs = pytest.mark.slow  # InceptionV3 runs at ~7 images/s on a 2-core CPU


def shapes_source(**params):
    recipe = resolve_recipe({"name": "t", "data": {"source": "shapes", **params}}, origin="test")
    return build_data_source(recipe)


def tiny_generator_samples(count: int) -> torch.Tensor:
    recipe = resolve_recipe(
        {
            "name": "t",
            "model": {"g_channels": 2, "d_channels": 2, "z_dim": 8, "attention_layer": [16]},
        },
        origin="test",
    )
    torch.manual_seed(0)
    generator, _ = build_networks(recipe, 0)
    return sample_images(generator, count, seed=7, device=CPU)


def save_pngs(images: torch.Tensor, folder) -> None:
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")


@inception_runs
def test_our_metrics_equal_torch_fidelity_on_png_folders(inception_weights, tmp_path):
    generated = tiny_generator_samples(24)
    reference = reference_from(shapes_source(num_images=200), "train", 24)
    weights = resolve_inception_weights(inception_weights)
    ours = Evaluation(weights, reference, CPU, batch_size=12).score(generated, ["fid", "is", "kid"])

    save_pngs(generated, tmp_path / "generated")
    save_pngs(reference.images.images(), tmp_path / "reference")
    theirs = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "generated"),
        input2=str(tmp_path / "reference"),
        cuda=False,
        isc=True,
        fid=True,
        kid=True,
        kid_subset_size=24,
        batch_size=12,
        feature_extractor_weights_path=str(inception_weights),
        verbose=False,
        save_cpu_ram=True,
    )
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["is_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["fid"] > 0 and ours["num_samples"] == 24
    assert ours["feature_extractor"]["sha256"] == file_sha256(inception_weights)
    assert ours["reference"] == {"source": "shapes", "split": "train", "size": 24, "available": 200}


@inception_runs
def test_fid_against_itself_is_zero_and_against_noise_large(inception_weights):
    weights = resolve_inception_weights(inception_weights)
    reference = reference_from(shapes_source(num_images=24), "train", 24)
    evaluation = Evaluation(weights, reference, CPU, batch_size=24)
    same = evaluation.score(reference.images.images(), ["fid", "kid"])
    noise = torch.randint(
        0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    different = evaluation.score(noise, ["fid", "kid"])
    assert abs(same["fid"]) < 1e-4 * different["fid"]  # sqrtm round-off at 24 samples in 2048-d
    assert different["fid"] > 1.0
    for record in (same, different):
        assert math.isfinite(record["kid_mean"]) and math.isfinite(record["kid_std"])
    assert different["kid_mean"] > same["kid_mean"]


@inception_runs
def test_reference_statistics_are_cached_and_invalidated(inception_weights, tmp_path):
    weights = resolve_inception_weights(inception_weights)
    generated = tiny_generator_samples(8)

    def score(**params):
        reference = reference_from(shapes_source(**params), "train", 8)
        Evaluation(weights, reference, CPU, batch_size=8, cache_root=tmp_path).score(
            generated, ["fid"]
        )
        return reference.images.loads

    assert score(num_images=64) == 1  # computed
    assert score(num_images=64) == 0  # reused: the reference was never even decoded
    assert score(num_images=64, seed=1) == 1  # other data parameters: other statistics
    assert len(list(tmp_path.iterdir())) == 2

    folder = next(
        p
        for p in tmp_path.iterdir()
        if json.loads((p / "meta.json").read_text())["identity"]["params"]["seed"] == 0
    )
    (folder / "meta.json").unlink()  # as if the process died before committing
    assert score(num_images=64) == 1
    for cached in folder.glob("*.pt"):
        cached.write_bytes(cached.read_bytes()[:100])  # a corrupt cache file
    assert score(num_images=64) == 1
    assert score(num_images=64) == 0


def test_weights_option_beats_environment_beats_cache(inception_weights, tmp_path, monkeypatch):
    other = tmp_path / "other.pth"
    other.write_bytes(inception_weights.read_bytes())
    monkeypatch.setenv("SAGAN_INCEPTION_WEIGHTS", str(other))
    assert resolve_inception_weights(inception_weights).origin == "option"
    assert resolve_inception_weights(None).path == other
    monkeypatch.delenv("SAGAN_INCEPTION_WEIGHTS")
    cached = cached_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(inception_weights.read_bytes())
    assert resolve_inception_weights(None).origin == "torch-fidelity cache"


# ---- through the CLI ------------------------------------------------------------------------------


@pytest.fixture
def trained_run(cli, tiny_recipe, tmp_path):
    assert cli("train", str(tiny_recipe), "--results", str(tmp_path / "results")).exit_code == 0
    return next((tmp_path / "results" / "tiny" / "runs").iterdir())


SMALL = ("--num-samples", "16", "--reference-samples", "16", "--batch-size", "16")


def test_offline_without_weights_is_a_clear_error_before_any_work(cli, trained_run):
    metrics_before = (trained_run / "metrics.jsonl").read_bytes()
    result = cli("eval", str(trained_run), *SMALL)
    assert_clean_error(
        result,
        "weights-inception-2015-12-05-6726825d.pth",
        "--inception-weights",
        "SAGAN_INCEPTION_WEIGHTS",
        "network disabled",
    )
    assert (trained_run / "metrics.jsonl").read_bytes() == metrics_before
    assert not (trained_run / "eval.json").exists()


def test_training_that_needs_weights_fails_before_starting_offline(cli, tiny_recipe, tmp_path):
    result = cli(
        "train", str(tiny_recipe), "--set", "eval.final=true", "--results", str(tmp_path / "r")
    )
    assert_clean_error(result, "Inception weights", "--inception-weights")
    assert not (tmp_path / "r").exists()


def test_corrupt_and_wrong_shape_weights_are_named(cli, trained_run, inception_weights, tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"definitely not a state dict")
    assert_clean_error(
        cli("eval", str(trained_run), "--inception-weights", str(corrupt)), str(corrupt), "corrupt"
    )
    state = torch.load(inception_weights, weights_only=True)
    state["fc.weight"] = torch.zeros(10, 2048)
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    assert_clean_error(
        cli("eval", str(trained_run), "--inception-weights", str(wrong)),
        str(wrong),
        "fc.weight",
        "(1008, 2048)",
    )


@inception_runs
def test_eval_a_run_records_results_with_provenance(cli, trained_run, inception_weights):
    args = ("eval", str(trained_run), *SMALL, "--inception-weights", str(inception_weights))
    first = cli(*args, "--metrics", "fid,is,kid")
    assert first.exit_code == 0, first.output
    second = cli(*args, "--metrics", "fid", "--json")
    assert second.exit_code == 0, second.output
    record = json.loads(second.stdout)  # the phase lines go to stderr, the JSON alone to stdout
    # off a terminal each phase is a plain line as it begins (CI, cluster logs)
    assert "sampling 16 images from the EMA generator (step-00000006.pt)" in first.stderr
    assert "inception-v3-compat: features of 16 images (fid, is, kid)" in first.stderr
    assert "features of 16 reference images (computed now, then cached)" in first.stderr
    assert "features of 16 reference images (cached)" in second.stderr
    evaluations = json.loads((trained_run / "eval.json").read_text())["evaluations"]
    assert len(evaluations) == 2 and evaluations[1] == record  # the first one is kept
    assert evaluations[0]["is_mean"] > 0 and evaluations[0]["kid_mean"] is not None
    assert record["checkpoint"] == "step-00000006.pt" and record["step"] == 6
    assert record["reference"]["size"] == 16 and record["num_samples"] == 16
    assert record["feature_extractor"]["sha256"] == file_sha256(inception_weights)
    assert record["torch_fidelity"] == torch_fidelity.__version__
    last_line = json.loads((trained_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_line["kind"] == "eval" and last_line["fid"] == record["fid"]


def test_eval_checks_its_options(cli, trained_run, inception_weights):
    with_weights = ("--inception-weights", str(inception_weights))
    assert_clean_error(cli("eval", str(trained_run), "--metrics", "fid,lpips"), "fid, is, kid")
    assert_clean_error(
        cli("eval", str(trained_run), "--checkpoint", "best", *with_weights), "no best.pt"
    )
    assert_clean_error(cli("eval", str(trained_run / "missing")), "not a run folder")
    assert_clean_error(cli("eval"), "run folder")
    assert_clean_error(
        cli("eval", str(trained_run), "--reference", "/no/such/place", *with_weights),
        "/no/such/place",
    )


@inception_runs
def test_in_training_fid_keeps_the_best_checkpoint(cli, tiny_recipe, tmp_path, inception_weights):
    sets = [
        "eval.every=3",
        "eval.final=true",
        "eval.num_samples=16",
        "eval.reference_samples=16",
        "eval.batch_size=16",
    ]
    result = cli(
        "train",
        str(tiny_recipe),
        "--results",
        str(tmp_path),
        "--inception-weights",
        str(inception_weights),
        *[a for s in sets for a in ("--set", s)],
    )
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "tiny" / "runs").iterdir())
    evals = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    best_step = min(evals[:2], key=lambda e: e["fid"])["step"]
    assert [(e["step"], e["final"], e["checkpoint"]) for e in evals] == [
        (3, False, "training"),
        (6, False, "training"),
        (6, True, "training"),
        (best_step, False, "best.pt"),  # the best checkpoint gets the full metrics too
    ]
    assert "is_mean" not in evals[0] and "is_mean" in evals[2] and "is_mean" in evals[3]
    assert evals[3]["fid"] == pytest.approx(evals[best_step // 3 - 1]["fid"], rel=1e-6)
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["step"] == best_step
    again = cli(
        "eval",
        str(run),
        "--checkpoint",
        "best",
        *SMALL,
        "--metrics",
        "fid",
        "--inception-weights",
        str(inception_weights),
    )
    assert again.exit_code == 0, again.output


@inception_runs
def test_a_best_checkpoint_at_the_final_step_is_recorded_without_a_second_evaluation(
    cli, tiny_recipe, tmp_path, inception_weights
):
    """No in-training FID: best.pt is the final weights, scored once; its record says what
    ``sagan eval --checkpoint best`` computes from the file."""
    weights = ("--inception-weights", str(inception_weights))
    sets = [
        "eval.final=true",
        "eval.num_samples=4",
        "eval.reference_samples=4",
        'eval.metrics=["fid"]',
    ]
    args = [a for s in sets for a in ("--set", s)]
    trained = cli("train", str(tiny_recipe), "--results", str(tmp_path), *weights, *args)
    assert trained.exit_code == 0, trained.output
    run = next((tmp_path / "tiny" / "runs").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final, best = [r for r in records if r["kind"] == "eval"]
    assert (final["checkpoint"], best["checkpoint"], best["step"]) == ("training", "best.pt", 6)
    assert {k: v for k, v in best.items() if k not in ("final", "checkpoint")} == {
        k: v for k, v in final.items() if k not in ("final", "checkpoint")
    }
    again = cli(
        "eval", str(run), "--checkpoint", "best", "--num-samples", "4",
        "--reference-samples", "4", "--metrics", "fid", *weights, "--json",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["fid"] == pytest.approx(best["fid"], rel=1e-6)


@inception_runs
def test_eval_an_image_folder_from_another_codebase(cli, tmp_path, inception_weights):
    generated = tiny_generator_samples(16)
    save_pngs(generated, tmp_path / "samples")
    reference = reference_from(shapes_source(num_images=16), "train", 16).images.images()
    np.savez(tmp_path / "real.npz", images=reference.permute(0, 2, 3, 1).numpy())
    result = cli(
        "eval",
        "--images",
        str(tmp_path / "samples"),
        "--reference",
        str(tmp_path / "real.npz"),
        "--metrics",
        "fid,kid",
        "--inception-weights",
        str(inception_weights),
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["num_samples"] == 16 and record["fid"] > 0
    assert "features of 16 images (fid, kid)" in result.stderr
    assert "features of 16 reference images" in result.stderr
    by_split = cli(
        "eval",
        "--images",
        str(tmp_path / "samples"),
        "--reference",
        "train",
        "--recipe",
        "smoke",
        "--reference-samples",
        "16",
        "--metrics",
        "fid",
        "--inception-weights",
        str(inception_weights),
        "--json",
    )
    assert by_split.exit_code == 0, by_split.output
    assert_clean_error(
        cli(
            "eval",
            "--images",
            str(tmp_path / "samples"),
            "--reference",
            "train",
            "--inception-weights",
            str(inception_weights),
        ),
        "--recipe",
    )
