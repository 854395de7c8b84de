"""The plugin contract: packages of other API versions, the check for plugin authors' own
tests, and what passes the check trains (each case was a defect first)."""

from __future__ import annotations

import pytest
from helpers import assert_clean_error
from helpers import train_with_sets as train

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
    assert message.strip().count("\n") == 0
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
