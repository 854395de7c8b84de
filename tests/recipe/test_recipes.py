"""Recipes: loading, defaults, overrides, round trip, and every kind of bad input."""

from __future__ import annotations

import os

import pydantic
import pytest
from helpers import assert_clean_error

from sagan_cli.errors import RecipeError
from sagan_cli.recipe import (
    find_recipe,
    load_recipe,
    parse_override,
    recipe_dict,
    recipe_toml,
    resolve_recipe,
    shipped_recipe_names,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def test_shipped_recipes_exist():
    assert {"smoke", "sagan_full", "sagan_cifar10", "sagan_imagenet128", "paper_table1"} <= set(
        shipped_recipe_names()
    )


@pytest.mark.parametrize("name", shipped_recipe_names())
def test_round_trip_is_identical(name, tmp_path):
    recipe = load_recipe(name)
    text = recipe_toml(recipe)
    again_path = tmp_path / "again.toml"
    again_path.write_text(text)
    again = load_recipe(again_path)
    assert again == recipe
    assert recipe_toml(again) == text
    assert tomllib.loads(text) == recipe_dict(recipe)


def test_defaults_fill_every_section_and_plugin_parameters():
    recipe = resolve_recipe({"name": "minimal"}, origin="test")
    data = recipe_dict(recipe)
    assert data["train"]["lr_d"] == 4e-4 and data["train"]["lr_g"] == 1e-4  # TTUR
    assert data["train"]["betas"] == [0.0, 0.9]
    assert data["loss"]["name"] == "hinge"
    assert data["model"]["attention"] == {"variant": "sagan", "reduction": 8}
    assert data["model"]["norm"]["generator"] == {
        "name": "spectral",
        "power_iterations": 1,
        "eps": 1e-12,
    }
    assert data["data"]["num_images"] == 10_000  # shapes' own default


def test_recipe_is_frozen():
    recipe = resolve_recipe({"name": "minimal"}, origin="test")
    with pytest.raises(pydantic.ValidationError):
        recipe.train.steps = 3


@pytest.mark.parametrize(
    "override, path, expected",
    [
        ("train.steps=200", ("train", "steps"), 200),
        ("train.lr_d=2e-4", ("train", "lr_d"), 2e-4),
        ("model.attention_layer=[8,16]", ("model", "attention_layer"), [8, 16]),
        ("model.attention_layer=[]", ("model", "attention_layer"), []),
        ("data.source=npz", ("data", "source"), "npz"),
        ('description="two words"', ("description",), "two words"),
        ("train.compile=true", ("train", "compile"), True),
    ],
)
def test_override_values_parse_as_toml(override, path, expected):
    parsed = parse_override(override)
    assert parsed.parts == path and parsed.value == expected


def test_overrides_apply_and_validate():
    recipe = resolve_recipe(
        {"name": "x"},
        ["train.steps=7", "model.attention_layer=[8]", "model.attention.reduction=4"],
        origin="test",
    )
    assert recipe.train.steps == 7
    assert recipe.model.attention_layer == [8]
    assert recipe.model.attention.model_extra == {"reduction": 4}


def test_run_ids_change_with_what_changes_results_and_only_with_that():
    from sagan_cli.results import legacy_run_id, run_id, run_identity

    def recipe(*overrides: str, name: str = "x"):
        return resolve_recipe({"name": name}, list(overrides), origin="test")

    base = run_id(recipe())
    for same in (
        "train.compile=true",
        "train.memory_format='contiguous'",
        "train.sync_batchnorm=false",
        "launch.launcher='ray'",
        "logging.tensorboard=true",
        "train.bf16_on_cpu=false",
    ):
        assert run_id(recipe(same)) == base, same
    assert run_id(recipe(name="y")) == base
    # a key added since 0.1 is left out at its default, so 0.1 run folders keep their ids
    assert "bf16_on_cpu" not in run_identity(recipe())["train"]
    for different in (
        "train.steps=7",
        "seed=1",
        "train.precision='fp32'",
        "train.bf16_on_cpu=true",
    ):
        assert run_id(recipe(different)) != base, different
    # 0.1 counted train.compile in as a boolean: auto and false were one id, true another
    legacy = {c: legacy_run_id(recipe(f"train.compile={c}")) for c in ("'auto'", "false", "true")}
    assert legacy["'auto'"] == legacy["false"] != legacy["true"]
    assert base not in legacy.values()


def test_switching_a_plugin_drops_the_old_plugins_parameters():
    raw = {"name": "x", "model": {"attention": {"variant": "sagan", "reduction": 4}}}
    switched = resolve_recipe(raw, ["model.attention.variant=sagan_pooled"], origin="test")
    assert switched.model.attention.model_extra == {
        "key_reduction": 8,
        "value_reduction": 2,
        "pool": 2,
    }
    kept = resolve_recipe(raw, ["model.attention.variant=sagan"], origin="test")
    assert kept.model.attention.model_extra == {"reduction": 4}
    with_param = resolve_recipe(
        raw, ["model.attention.variant=residual", "model.attention.kernel_size=1"], origin="test"
    )
    assert with_param.model.attention.model_extra["kernel_size"] == 1


def test_norm_shorthand_string_and_table():
    recipe = resolve_recipe(
        {
            "name": "x",
            "model": {
                "norm": {
                    "generator": "none",
                    "discriminator": {"name": "spectral", "power_iterations": 3},
                }
            },
        },
        origin="test",
    )
    assert recipe.model.norm.generator.name == "none"
    assert recipe.model.norm.discriminator.model_extra["power_iterations"] == 3


def test_shipped_recipe_found_by_name_and_by_recipes_path_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_recipe("smoke").name == "smoke.toml"
    assert find_recipe("recipes/smoke.toml").name == "smoke.toml"
    assert load_recipe("recipes/smoke.toml").name == "smoke"


def test_per_network_attention_overrides():
    recipe = resolve_recipe(
        {
            "name": "x",
            "data": {"resolution": 32},
            "model": {"attention_layer": [], "g_attention_layer": [32]},
        },
        origin="test",
    )
    assert recipe.g_attention == [32] and recipe.d_attention == []


# ---- bad input: one clear paragraph, exit code 2, no traceback -------------------------------


def test_missing_recipe_file(cli, tmp_path):
    result = cli("recipe", "show", str(tmp_path / "nope.toml"))
    assert_clean_error(result, "not found", "nope.toml", "smoke")


def test_malformed_toml_names_line_and_column(cli, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[train]\nsteps = = 3\n')
    result = cli("recipe", "show", str(path))
    assert_clean_error(result, "broken.toml", "line 3", "column")


def test_unknown_key_suggests_the_closest(cli, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('name = "x"\n[train]\nstpes = 3\n')
    result = cli("recipe", "show", str(path))
    assert_clean_error(result, "typo.toml", "train.stpes", "Did you mean 'steps'")


def test_unknown_key_in_a_plugin_table_suggests_host_keys_too(cli):
    result = cli("recipe", "show", "smoke", "--set", "data.resolutoin=64")
    assert_clean_error(result, "data.resolutoin", "Did you mean 'resolution'", "num_images")


def test_unknown_key_in_a_plugin_table_suggests_the_parameter(cli, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('name = "x"\n[model.attention]\nvariant = "sagan"\nreductoin = 4\n')
    result = cli("recipe", "show", str(path))
    assert_clean_error(result, "model.attention.reductoin", "Did you mean 'reduction'")


@pytest.mark.parametrize(
    "override, fragments",
    [
        (
            "train.steps=-5",
            ["train.steps", "-5", "greater than or equal to 1", "--set train.steps=-5"],
        ),
        ("train.precision=fp8", ["train.precision", "'fp8'", "'bf16', 'fp32' or 'fp64'"]),
        ("train.steps=many", ["train.steps", "valid integer"]),
        ("data.resolution=48", ["data.resolution", "32, 64 or 128"]),
        ("model.attention_layer=[32]", ["model.attention_layer", "Valid: [8, 16]"]),
        ("train.betas=[0.5,1.5]", ["train.betas", "[0, 1)"]),
    ],
)
def test_wrong_type_or_range_names_key_and_allowed(cli, override, fragments):
    result = cli("recipe", "show", "smoke", "--set", override)
    assert_clean_error(result, *fragments)


def test_unknown_plugin_name_lists_available(cli):
    result = cli("recipe", "show", "smoke", "--set", "model.attention.variant=sagn")
    assert_clean_error(
        result,
        "model.attention.variant",
        "'sagn'",
        "Did you mean 'sagan'",
        "sagan_pooled",
        "residual",
    )


def test_invalid_plugin_parameter_points_at_recipe_key(cli):
    result = cli("recipe", "show", "smoke", "--set", "model.attention.reduction=0")
    assert_clean_error(result, "model.attention.reduction", "greater than or equal to 1")


def test_weight_norm_where_feature_norm_belongs(cli):
    result = cli("recipe", "show", "smoke", "--set", "model.norm.features=spectral")
    assert_clean_error(result, "model.norm.features", "weight normalization", "batchnorm")


def test_conditional_mismatch_is_explained(cli):
    result = cli("recipe", "show", "smoke", "--set", "model.conditional=true")
    assert_clean_error(result, "model.conditional", "conditional_batchnorm")


@pytest.mark.parametrize(
    "bad", ["trainsteps200", "=3", "train..steps=3", "model.attention_layer=[16"]
)
def test_malformed_set(cli, bad):
    result = cli("recipe", "show", "smoke", "--set", bad)
    assert_clean_error(result, bad.split("=")[0] if "[" not in bad else "not valid TOML")


def test_set_into_a_value_is_an_error(cli):
    result = cli("recipe", "show", "smoke", "--set", "train.steps.x=1")
    assert_clean_error(result, "train.steps", "not a table")


def test_debug_env_shows_the_traceback(cli, tmp_path):
    result = cli("recipe", "show", str(tmp_path / "nope.toml"), env={"SAGAN_DEBUG": "1"})
    assert result.exit_code != 0 and isinstance(result.exception, RecipeError)


def test_recipe_show_prints_resolved_toml(cli):
    result = cli("recipe", "show", "smoke", "--set", "train.steps=9")
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    assert data["train"]["steps"] == 9 and data["name"] == "smoke"


def test_recipe_validate_checks_all_and_reports_each(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[model]\nz_dim = -3\n')
    result = cli("recipe", "validate", "smoke", "sagan_full", str(bad))
    message = assert_clean_error(result, "bad.toml", "model.z_dim", "1 of 3")
    assert "✓ smoke" in result.stdout and "✓ sagan_full" in result.stdout
    assert "smoke" not in message.split("bad.toml")[0]


def test_a_valid_recipe_whose_data_is_not_here_yet_is_valid_and_says_so(cli, tmp_path):
    absent = tmp_path / "absent.toml"
    absent.write_text('name = "absent"\n[data]\nsource = "npz"\npath = "missing.npz"\n')
    result = cli("recipe", "validate", "sagan_cifar10", str(absent))
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("✓ ")[1:]
    assert len(lines) == 2 and all("its data is not here yet" in line for line in lines)
    assert "cifar-10-python.tar.gz" in lines[0] and "missing.npz" in lines[1]


def test_model_summary_needs_no_data_files_when_the_source_knows_its_classes(cli):
    result = cli("model", "summary", "sagan_cifar10")  # no CIFAR files in the test cache
    assert result.exit_code == 0, result.output
    assert "10 classes" in result.stdout


def test_recipe_validate_all_shipped_recipes_with_embedded_data(cli):
    embedded = [n for n in shipped_recipe_names() if load_recipe(n).data.source == "shapes"]
    result = cli("recipe", "validate", *embedded)
    assert result.exit_code == 0, result.output


def test_missing_recipe_name_does_not_touch_cwd(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("recipe", "validate", "smokee")
    assert_clean_error(result, "Did you mean 'smoke'")
    assert os.listdir(tmp_path) == []
