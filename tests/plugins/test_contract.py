"""The plugin contract: packages of other API versions, the check for plugin authors' own
tests, and what passes the check trains (each case was a defect first)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import assert_clean_error, error_paragraph
from helpers import train_with_sets as train

from sagan_cli.recipe import load_recipe
from sagan_cli.results import list_runs
from sagan_cli.testing import ContractViolation, check_plugin

# ---- packages written for another API version ------------------------------------------------


def test_a_package_importing_the_0_1_names_gets_one_migration_paragraph(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api01_imports")
    result = cli("plugins")
    said = result.stderr
    assert result.exit_code == 2 and "Traceback" not in said
    assert said.count("Warning: plugin 'api01_imports'") == 1
    for fragment in ("API 0.1", "sagan_cli.api", "factory(params, context)", "Writing a plugin"):
        assert fragment in said, said


def test_old_style_factories_are_refused_once_naming_every_plugin(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    monkeypatch.setenv("SAGAN_PLUGINS", "api01_factories")
    listed = cli("plugins", "--kind", "attention")
    said = listed.stderr
    assert said.count("Warning: plugin 'api01_factories'") == 1, said  # not one per plugin
    assert "old_a, old_b, old_c" in said and "(params, context" in said
    used = train(cli, tiny_recipe, tmp_path, "model.attention.variant=old_a")
    assert_clean_error(
        used, "'old_a' is not a registered attention plugin", "factory(params, context)"
    )


def test_a_descriptor_for_a_newer_api_is_told_to_upgrade_sagan_cli(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api_future")
    result = cli("plugins")
    assert result.exit_code == 2 and "api_version = 2" in result.stderr
    assert "a newer plugin API than this sagan-cli" in result.stderr
    assert 'pip install -U "sagan-cli"' in result.stderr
    assert "sagan_cli.plugins" not in result.stderr  # not the 0.1 migration paragraph


def test_a_descriptor_for_an_older_api_gets_the_migration_paragraph(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api_past")
    result = cli("plugins")
    assert result.exit_code == 2 and "api_version = 0" in result.stderr
    assert "speaks plugin API v1" in result.stderr and "factory(params, context)" in result.stderr


def test_a_descriptor_without_api_version_is_taken_as_this_api_and_said_once(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "api_undeclared")
    listed = cli("plugins", "--kind", "attention")
    assert listed.exit_code == 0, listed.output
    assert "quiet_one" in listed.stdout and "quiet_two" in listed.stdout
    assert listed.stderr.count("without api_version") == 1, listed.stderr
    assert "quiet_one, quiet_two without api_version; taken as plugin API v1" in listed.stderr
    assert "api_version=1" in listed.stderr


# ---- the contract helper for plugin authors' own tests -----------------------------------------


def test_check_plugin_runs_in_process_for_chosen_places():
    rows = check_plugin("sagan", placements=["g16@32", "d8@64"])
    assert [r.place for r in rows] == [
        "G 16x16, 32 ch (32px)",
        "G 16x16, 256 ch (32px)",
        "D 8x8, 256 ch (64px)",
    ]
    assert {r.outcome for r in rows} == {"ok"}
    with pytest.raises(Exception, match="not NETWORK SIZE"):
        check_plugin("sagan", placements=["x16"])


def test_check_plugin_raises_naming_each_failed_place_for_an_uninstalled_module():
    with pytest.raises(ContractViolation) as caught:
        check_plugin("layout_breaker", modules=["contract_plugins"], placements=["g8@32", "d16@32"])
    text = str(caught.value)
    assert "4 of 4 contract checks" in text and "G 8x8" in text and "D 16x16" in text
    assert "as training runs it (channels_last" in text and "view size" in text


def test_the_sagan_check_fixture(sagan_check):
    rows = sagan_check("gamma_param", modules=["contract_plugins"], placements=["g8@32"])
    assert rows and {r.outcome for r in rows} == {"ok"}


def test_the_check_feeds_the_size_the_context_promises():
    """A block with a position table of the context's size: the old checker cropped large maps
    to 16x16 for second derivatives and failed it with a bare AssertionError."""
    rows = check_plugin(
        "sized", modules=["contract_plugins"], placements=["g32@64", "d32@64", "g64@64"]
    )
    assert {r.outcome for r in rows} == {"ok"}, [(r.place, r.detail) for r in rows]


def test_a_5d_weight_passes_the_check_and_trains_in_channels_last(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    rows = check_plugin("conv3d_block", placements=["g16@32", "d8@32"])
    assert {r.outcome for r in rows} == {"ok"}
    result = train(
        cli, tiny_recipe, tmp_path, "model.attention.variant=conv3d_block", "train.steps=2"
    )
    assert result.exit_code == 0, result.output
    status = next(iter(list_runs(tmp_path / "tiny"))).read_status()
    assert status["execution"]["memory_format"] == "channels_last"  # what training chose here


def test_a_layout_breaking_block_fails_the_check_and_is_refused_before_training(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    checked = cli("plugins", "check", "layout_breaker", "--at", "g16@32")
    assert_clean_error(checked, "layout_breaker", "as training runs it", "channels_last")
    trained = train(cli, tiny_recipe, tmp_path, "model.attention.variant=layout_breaker")
    message = assert_clean_error(trained, "attention plugin 'layout_breaker'", "view size")
    assert error_paragraph(message).strip().count("\n") == 0
    ablated = cli(
        "ablate", str(tiny_recipe), "--vary", "attention=none,layout_breaker", "--name", "lb",
        "--results", str(tmp_path), "--set", "train.steps=2",
    )  # fmt: skip
    # the other run finished; the command exits 2 naming the plugin: the cause is configuration
    assert ablated.exit_code == 2, ablated.output
    assert "failed on their configuration" in ablated.stderr
    assert "attention plugin 'layout_breaker'" in ablated.stderr
    statuses = {r.read_status()["status"]: r.read_status() for r in list_runs(tmp_path / "lb")}
    assert set(statuses) == {"done", "failed"}  # never left queued with "see the lines above"
    assert "layout_breaker" in statuses["failed"]["error"]
    assert statuses["failed"]["exit_code"] == 2


def test_a_declined_placement_is_not_supported_refused_and_skipped(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    checked = cli("plugins", "check", "small_only", "--at", "g8@32,g16@32")
    assert checked.exit_code == 0, checked.output
    assert "not supported" in checked.stdout and "not above 8x8" in checked.stderr
    assert "2 not supported: the plugin declines these places" in checked.stderr

    refused = train(cli, tiny_recipe, tmp_path, "model.attention.variant=small_only")
    assert_clean_error(refused, "does not support the generator at 16x16", "not above 8x8")
    assert not (tmp_path / "tiny").exists()  # before any work
    validated = cli(
        "recipe", "validate", str(tiny_recipe), "--set", "model.attention.variant=small_only"
    )
    assert validated.exit_code == 2 and "not above 8x8" in validated.stderr

    ablated = cli(
        "ablate", str(tiny_recipe), "--set", "model.attention.variant=small_only",
        "--vary", "attention_layer=[8],[16]", "--name", "small", "--results", str(tmp_path),
        "--set", "train.steps=2",
    )  # fmt: skip
    assert ablated.exit_code == 0, ablated.output
    statuses = sorted(r.read_status()["status"] for r in list_runs(tmp_path / "small"))
    assert statuses == ["done", "skipped"]
    assert "1 run(s) skipped" in ablated.stderr and "not above 8x8" in ablated.stderr
    assert "not above 8x8" in (tmp_path / "small" / "summary.md").read_text()


def test_identity_at_init_may_depend_on_the_parameters(contract_plugins):
    assert {r.outcome for r in check_plugin("gamma_param", placements=["g8@32"])} == {"ok"}
    lifted = check_plugin("gamma_param", {"gamma_init": 0.5}, placements=["g8@32"])
    assert {r.outcome for r in lifted} == {"ok"}  # no claim when gamma starts at 0.5
    with pytest.raises(ContractViolation, match="claims identity_at_init"):
        check_plugin("gamma_liar", {"gamma_init": 0.5}, placements=["g8@32"])


def test_plugins_check_parameters_are_validated(cli):
    for bad, fragment in (
        ("reduction=abc", "--param.reduction"),
        ("reduction=0", "--param.reduction"),
        ("heads=2", "has no parameter 'heads'"),
    ):
        result = cli("plugins", "check", "sagan", "--param", bad)
        assert_clean_error(result, fragment)


# ---- what plugin authors got stuck on (round four) ----------------------------------------------


def test_the_check_exercises_the_precision_training_runs(cli, contract_plugins):
    from sagan_cli.device import cpu_has_native_bf16

    fp32 = cli("plugins", "check", "bf16_breaker", "--at", "g16@32")
    assert fp32.exit_code == 0, fp32.output  # the default CPU check is fp32: the bug hides
    fp16 = cli("plugins", "check", "bf16_breaker", "--at", "g16@32", "--precision", "fp16")
    assert_clean_error(fp16, "--precision fp16 needs CUDA")
    bf16 = cli("plugins", "check", "bf16_breaker", "--at", "g16@32", "--precision", "bf16")
    if not cpu_has_native_bf16():
        assert_clean_error(bf16, "no native bf16")
        return
    assert_clean_error(bf16, "bf16_breaker", "assumes float32 features", "problem in the plugin")
    with pytest.raises(ContractViolation, match="float32 features"):
        check_plugin("bf16_breaker", placements=["g16@32"], precision="bf16")


def test_a_training_error_names_the_check_that_runs_the_mode_that_failed(
    cli, tiny_recipe, tmp_path, contract_plugins
):
    from sagan_cli.device import cpu_has_native_bf16
    from sagan_cli.plugins import check_command

    assert check_command("x") == "sagan plugins check x"
    assert check_command("x", ("cuda", "bf16")) == "sagan plugins check x --device cuda"
    assert check_command("x", ("cpu", "bf16")) == "sagan plugins check x --precision bf16"
    assert (
        check_command("x", ("cuda", "fp32"))
        == "sagan plugins check x --device cuda --precision fp32"
    )
    assert check_command("x", ("cpu", "fp64")) is None
    if not cpu_has_native_bf16():
        pytest.skip("bf16 training on this CPU needs native bf16")
    sets = [
        "model.attention.variant=bf16_breaker",
        "train.precision=bf16",
        "train.bf16_on_cpu=true",
    ]
    trained = train(cli, tiny_recipe, tmp_path, *sets)
    assert_clean_error(trained, "`sagan plugins check bf16_breaker --precision bf16` reproduces it")


def test_check_rows_and_placements_are_public_and_the_import_stays_light():
    from sagan_cli.testing import CheckRow, Placement

    rows = check_plugin("sagan", placements=[Placement("g", 32, 16, 32)])
    assert isinstance(rows[0], CheckRow) and rows[0].place == "G 16x16, 32 ch (32px)"
    code = "import sys, sagan_cli.testing; print('torch' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"


def test_a_module_named_twice_is_loaded_once(monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "mirror_attention")
    rows = check_plugin(
        "mirror_attention", placements=["g16@32"], modules=["mirror_attention", "mirror_attention"]
    )
    assert rows and {r.outcome for r in rows} == {"ok"}


def test_a_plugin_that_refuses_its_parameters_is_said_to_be_the_parameters(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "bad_plugins")
    result = cli("plugins", "check", "bad_deliberate", "--at", "g16@32")
    message = assert_clean_error(result, "needs at least 16 channels", "the parameters' problem")
    assert "problem in the plugin" not in message
    with pytest.raises(ContractViolation, match="refused the parameters"):
        check_plugin("bad_deliberate", placements=["g16@32"], modules=["bad_plugins"])


def test_a_bad_plugin_parameter_names_the_set_that_gave_it(tmp_path):
    from sagan_cli.errors import RecipeError

    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\n[model.attention]\nvariant = "sagan"\n')
    overrides = ["model.attention.variant=sagan", "model.attention.reduction=garbage"]
    with pytest.raises(RecipeError) as caught:
        load_recipe(str(recipe), overrides)
    assert "(set by --set model.attention.reduction=garbage)" in str(caught.value)
    assert "variant=sagan)" not in str(caught.value)


def test_identity_at_init_functions_are_listed_by_name(cli, contract_plugins):
    listed = json.loads(cli("plugins", "--json", "--kind", "attention").stdout)
    (gamma,) = [p for p in listed if p["name"] == "gamma_param"]
    assert gamma["identity_at_init"].startswith("function contract_plugins.")
    assert "0x" not in gamma["identity_at_init"]
