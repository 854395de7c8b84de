"""The plugin surface: registry loading, every hook, listing, and broken or clashing plugins."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess

import pytest
from helpers import REPO, assert_clean_error, sagan_command, sagan_subprocess_env

from sagan_cli.api import KINDS
from sagan_cli.errors import PluginError, RecipeError
from sagan_cli.plugins import get_registry, load_registry
from sagan_cli.recipe import load_recipe, read_toml


def extra_plugin_installed() -> bool:
    try:
        importlib.metadata.distribution("sagan-extra-attention")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_extra_plugin = pytest.mark.skipif(
    not extra_plugin_installed() and not os.environ.get("SAGAN_EXPECT_EXTRA_PLUGIN"),
    reason="plugins/sagan-extra-attention is not installed (nox -s tests installs it)",
)


@pytest.mark.parametrize("kind", KINDS)
def test_every_hook_registers_its_builtins(kind):
    """The built-in modules are discovered (no list to keep): every descriptor they define is
    registered under its kind, and every kind has built-ins."""
    import importlib

    from sagan_cli.plugins import builtin_modules

    defined = {
        plugin.name
        for module in builtin_modules()
        for plugin in importlib.import_module(module).PLUGINS
        if plugin.kind == kind
    }
    registry = load_registry()
    assert defined and {e.name for e in registry.all(kind) if e.provider == "sagan-cli"} == defined


def test_every_kind_is_described_once_and_wired_everywhere():
    """A kind's descriptor carries its hook, factory call and help; the recipe names it in a
    slot; the contract has a check for it; `sagan plugins --kind` offers it."""
    from sagan_cli.api import PLUGIN_CLASSES, Hookspecs
    from sagan_cli.plugin_check import CHECKS
    from sagan_cli.recipe import PLUGIN_LISTS, PLUGIN_SLOTS, host_field_paths

    for kind, descriptor in PLUGIN_CLASSES.items():
        hook = getattr(Hookspecs, f"sagan_register_{kind}")
        assert descriptor.summary_of_kind in hook.__doc__
        assert descriptor.calls.startswith("factory(") and descriptor.factory_arguments() in (1, 2)
        assert kind in CHECKS
        # named by a slot (one plugin) or a list (several, all used: [track] backends)
        in_slot = any(slot.kind == kind for slot in PLUGIN_SLOTS)
        in_list = PLUGIN_LISTS.get(kind) in host_field_paths()
        assert in_slot != in_list, kind
    assert set(CHECKS) == set(PLUGIN_CLASSES)


def test_plugins_json_lists_kind_name_summary_provider_version(cli):
    result = cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    sagan = next(p for p in listed if p["kind"] == "attention" and p["name"] == "sagan")
    assert sagan["provider"] == "sagan-cli" and sagan["version"]
    assert sagan["summary"] and sagan["params"]["reduction"]["default"] == 8
    assert {p["kind"] for p in listed} == set(KINDS)


def test_plugins_table_and_kind_filter(cli):
    result = cli("plugins", "--kind", "loss")
    assert result.exit_code == 0
    assert (
        "hinge" in result.stdout
        and "wasserstein" in result.stdout
        and "spectral" not in result.stdout
    )
    assert_clean_error(
        cli("plugins", "--kind", "optimizer"), "attention, normalization, loss, data"
    )


@needs_extra_plugin
def test_installed_plugin_package_registers_for_real():
    """Through its real entry point, in a separate interpreter, as a user would see it."""
    out = subprocess.run(
        sagan_command("plugins", "--kind", "attention", "--json"),
        env=sagan_subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    assert listed["multihead"]["provider"] == "sagan-extra-attention"
    version = read_toml(REPO / "plugins" / "sagan-extra-attention" / "pyproject.toml")
    assert listed["multihead"]["version"] == version["project"]["version"]  # the installed one
    assert "linear" in listed


@needs_extra_plugin
def test_installed_plugin_can_be_named_in_a_recipe(cli):
    recipe = load_recipe("smoke", ["model.attention.variant=multihead", "model.attention.heads=2"])
    assert recipe.model.attention.model_extra == {"heads": 2, "reduction": 2}
    result = cli("recipe", "validate", "smoke", "--set", "model.attention.variant=multihead")
    assert result.exit_code == 0, result.output


@needs_extra_plugin
def test_disabled_plugin_is_absent(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_DISABLED_PLUGINS", "extra_attention")
    get_registry.cache_clear()
    assert "multihead" not in get_registry().names("attention")
    result = cli("recipe", "show", "smoke", "--set", "model.attention.variant=multihead")
    assert_clean_error(result, "'multihead' is not a registered attention plugin", "sagan")


def test_uninstalled_plugin_is_absent(cli, fake_entry_points):
    fake_entry_points()  # no distribution provides the sagan_cli group
    assert "multihead" not in get_registry().names("attention")
    result = cli("recipe", "show", "smoke", "--set", "model.attention.variant=multihead")
    assert_clean_error(result, "'multihead' is not a registered attention plugin", "Available:")


def test_disabling_a_single_plugin_name(monkeypatch):
    monkeypatch.setenv("SAGAN_DISABLED_PLUGINS", "loss:wasserstein, residual")
    registry = load_registry()
    assert "wasserstein" not in registry.names("loss")
    assert "residual" not in registry.names("attention")
    assert "hinge" in registry.names("loss")


def test_duplicate_name_names_both_providers(cli, fake_entry_points):
    fake_entry_points(clash="duplicate_sagan")
    with pytest.raises(PluginError, match="sagan-cli .* and one from duplicate_sagan"):
        load_registry()
    assert_clean_error(
        cli("plugins"),
        "attention 'sagan'",
        "sagan-cli",
        "duplicate_sagan",
        "SAGAN_DISABLED_PLUGINS",
    )


def test_plugin_raising_on_import_is_named_and_others_load(cli, fake_entry_points):
    fake_entry_points(broken="broken_plugin", nan="nan_loss")
    registry = load_registry()
    assert [f.source for f in registry.failures] == ["broken"]
    assert "nan_hinge" in registry.names("loss") and "sagan" in registry.names("attention")
    result = cli("plugins", "--kind", "loss")
    assert "nan_hinge" in result.stdout  # the listing still shows what loaded
    assert_clean_error(result, "broken", "libfoo.so not found", "SAGAN_DISABLED_PLUGINS=broken")


def test_broken_plugin_does_not_block_recipes_that_do_not_need_it(cli, fake_entry_points):
    fake_entry_points(broken="broken_plugin")
    result = cli("recipe", "show", "smoke")
    assert result.exit_code == 0
    assert "broken" in result.stderr  # but the user is told


def test_misspelled_hook_fails_loudly(fake_entry_points):
    fake_entry_points(typo="misspelled_hook")
    with pytest.raises(PluginError, match="sagan_register_atention"):
        load_registry()


def test_local_plugin_module_through_env(monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "nan_loss")
    entry = load_registry().get("loss", "nan_hinge", key="loss.name")
    assert entry.provider == "nan_loss" and entry.version == "local"


def test_plugin_parameters_are_validated_by_the_plugins_model(monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "nan_loss")
    get_registry.cache_clear()
    with pytest.raises(RecipeError, match="loss.nan_from_call"):
        load_recipe("smoke", ["loss.name=nan_hinge", "loss.nan_from_call=0"])


def test_empty_entries_of_the_plugin_variables_are_ignored(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", ";;")
    monkeypatch.setenv("SAGAN_DISABLED_PLUGINS", ",, ;")
    listed = cli("plugins", "--kind", "loss")
    assert listed.exit_code == 0 and "hinge" in listed.stdout, listed.output
    assert "Warning" not in listed.stderr, listed.stderr
    monkeypatch.setenv("SAGAN_PLUGINS", "mirror_attention; ;")
    assert "mirror_attention" in cli("plugins", "--kind", "attention").stdout
