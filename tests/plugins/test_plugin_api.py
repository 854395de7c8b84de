"""The public plugin API: contexts, the contract checker, and every plugin mistake made clear."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import torch
from helpers import assert_clean_error, error_paragraph, sagan_command, sagan_subprocess_env
from torch import nn

from sagan_cli.api import LayerContext, apply_weight_norm
from sagan_cli.components import build_networks
from sagan_cli.errors import PluginError
from sagan_cli.plugin_check import check_plugin, placements_of, shipped_placements
from sagan_cli.plugins import get_registry
from sagan_cli.recipe import resolve_recipe
from sagan_cli.results import list_runs


def check_places():
    """What `sagan plugins check` visits by default: every place of the shipped recipes."""
    return shipped_placements(get_registry())


# every size at 32 and 64 px (D's 4x4 included) with a width of 2: what the checker must survive
TINY_PLACES = [p for r in (32, 64) for p in placements_of(r, 2, 2)]


@pytest.mark.parametrize("name", sorted(get_registry().names("attention")))
def test_every_registered_attention_plugin_passes_the_contract_checker(name):
    registry = get_registry()
    rows = check_plugin(registry.get("attention", name, key="x"), registry, TINY_PLACES)
    assert len(rows) == len(TINY_PLACES)
    assert all(r.outcome == "ok" for r in rows), [
        (r.place, r.detail) for r in rows if r.outcome != "ok"
    ]


@pytest.mark.parametrize("kind", ["normalization", "loss", "data", "launcher"])
def test_every_builtin_of_the_other_kinds_passes_or_says_why_not(kind):
    registry = get_registry()
    for entry in registry.all(kind):
        small = {"num_images": 64, "test_images": 64} if entry.name == "shapes" else None
        required = [n for n, f in entry.plugin.params.model_fields.items() if f.is_required()]
        if required:  # e.g. image-folder's path: the check cannot guess one and says so
            with pytest.raises(PluginError, match=f"--param {required[0]}=VALUE"):
                check_plugin(entry, registry, TINY_PLACES, small)
            continue
        rows = check_plugin(entry, registry, TINY_PLACES, small)
        assert rows and not [r for r in rows if r.outcome == "failed"], (entry.name, rows)
        if kind == "loss":
            assert [r.outcome for r in rows] == ["ok"]


def test_factories_are_told_where_they_build():
    seen: list[tuple[str, int, int, int, int]] = []

    class Recorder(nn.Module):
        def forward(self, x):
            return x

    from sagan_cli.api import AttentionPlugin
    from sagan_cli.plugins import Entry

    def factory(params, context: LayerContext):
        seen.append(
            (
                context.network,
                context.feature_size,
                context.channels,
                context.resolution,
                context.num_classes,
            )
        )
        return Recorder()

    registry = get_registry()
    plugin = AttentionPlugin(name="recorder", summary="x", factory=factory)
    registry.entries["attention"]["recorder"] = Entry(plugin, "tests", "0")
    try:
        recipe = resolve_recipe(
            {
                "name": "t",
                "data": {"resolution": 64},
                "model": {
                    "g_channels": 2,
                    "d_channels": 3,
                    "conditional": True,
                    "norm": {"features": "conditional_batchnorm"},
                    "g_attention_layer": [16, 32],
                    "d_attention_layer": [4],
                    "attention": {"variant": "recorder"},
                },
            },
            origin="test",
            registry=registry,
        )
        build_networks(recipe, 7, registry)
    finally:
        del registry.entries["attention"]["recorder"]
    # G at 64px: 16 ch at 16x16, 8 ch at 32x32 (2 x 8, 2 x 4); D: 24 ch at 4x4 (3 x 8, its
    # first 4x4 block)
    assert seen == [("g", 16, 16, 64, 7), ("g", 32, 8, 64, 7), ("d", 4, 24, 64, 7)]


def test_apply_weight_norm_wraps_every_layer_of_a_foreign_module():
    module = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Sequential(nn.Linear(4, 4)))
    wrapped = []
    result = apply_weight_norm(module, lambda layer: wrapped.append(type(layer).__name__) or layer)
    assert result is module and sorted(wrapped) == ["Conv2d", "Linear"]
    from torch.nn.utils.parametrizations import spectral_norm

    apply_weight_norm(module, spectral_norm)
    assert hasattr(module[0], "parametrizations") and hasattr(module[2][0], "parametrizations")


# ---- each plugin mistake: exit 2, one paragraph naming the plugin, its provider, key and place --


@pytest.fixture
def bad_plugins(monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "bad_plugins")
    get_registry.cache_clear()


@pytest.mark.parametrize(
    "variant, fragments",
    [
        ("bad_raises", ["ValueError: heads must divide channels", "building a block"]),
        ("bad_none", ["returned NoneType, not an nn.Module"]),
        ("bad_channels", ["generator at 8x8", "maps a (2, 16, 8, 8) feature map to (2, 17, 8, 8)"]),
        ("bad_nan", ["NaN or infinite"]),
        ("bad_in_d8", ["discriminator at 8x8", "shape mismatch in my einsum"]),
    ],
)
def test_a_broken_attention_plugin_is_one_paragraph_naming_it(
    cli, tiny_recipe, tmp_path, bad_plugins, variant, fragments
):
    result = cli(
        "train",
        str(tiny_recipe),
        "--set",
        f"model.attention.variant={variant}",
        "--set",
        "model.attention_layer=[8,16]",
        "--results",
        str(tmp_path),
    )
    message = assert_clean_error(
        result,
        f"attention plugin '{variant}' (bad_plugins local)",
        "model.attention.variant",
        "sagan plugins check",
        *fragments,
    )
    message = error_paragraph(message)
    assert message.startswith("Error:") and message.strip().count("\n") == 0  # one paragraph


def test_a_plugins_own_plugin_error_is_its_reason_not_blamed_on_it(
    cli, tiny_recipe, tmp_path, bad_plugins
):
    """The guide: raise PluginError("what is wrong and the fix") for problems the user can fix;
    its text is the reason, and the host does not add "this is a problem in the plugin"."""
    result = cli(
        "train",
        str(tiny_recipe),
        "--set",
        "model.attention.variant=bad_deliberate",
        "--results",
        str(tmp_path),
    )
    message = assert_clean_error(
        result, "attention plugin 'bad_deliberate'", "refused", "needs at least 16 channels"
    )
    assert "problem in the plugin" not in message and "fix the plugin" not in message


def test_model_summary_refuses_a_module_of_the_wrong_shape(cli, bad_plugins):
    result = cli("model", "summary", "smoke", "--set", "model.attention.variant=bad_channels")
    assert_clean_error(result, "bad_channels", "must keep the input's shape")


def test_a_broken_plugin_fails_its_ablation_run_with_the_message(
    cli, tiny_recipe, tmp_path, bad_plugins
):
    result = cli(
        "ablate",
        str(tiny_recipe),
        "--vary",
        "attention=sagan,bad_raises",
        "--name",
        "broken",
        "--results",
        str(tmp_path),
    )
    assert result.exit_code == 2, result.output  # the other run finished; the plugin is named
    assert "failed on their configuration" in result.stderr and "bad_raises" in result.stderr
    statuses = {r.read_status()["status"]: r.read_status() for r in list_runs(tmp_path / "broken")}
    assert set(statuses) == {"done", "failed"}
    assert (
        "bad_raises" in statuses["failed"]["error"]
        and "heads must divide" in statuses["failed"]["error"]
    )


@pytest.mark.slow
def test_plugins_check_reports_each_placement(cli, bad_plugins):
    good = cli("plugins", "check", "sagan", "none")
    assert good.exit_code == 0, good.output
    assert "G 16x16" in good.stdout and "D 4x4" in good.stdout
    bad = cli("plugins", "check", "bad_in_d8")
    message = assert_clean_error(bad, "bad_in_d8", "D 8x8", "shape mismatch")
    assert "failed" in bad.stdout and "ok" in bad.stdout  # only the D 8x8 places fail
    claim = cli("plugins", "check", "bad_not_identity")
    assert_clean_error(claim, "identity_at_init")
    assert "Traceback" not in message


def test_a_plugin_failing_everywhere_the_same_way_is_reported_once_with_its_places(
    cli, bad_plugins
):
    result = cli("plugins", "check", "bad_raises", "bad_in_d8")
    assert_clean_error(result, "heads must divide channels")
    lines = result.stderr.splitlines()
    everywhere = [line for line in lines if "heads must divide channels" in line]
    assert len(everywhere) == 2, result.stderr  # the plugin's line, and the summary naming it
    assert all("all " in line and " places" in line for line in everywhere)
    table_rows = [line for line in result.stdout.splitlines() if "bad_raises" in line]
    assert len(table_rows) == 1 and "failed" in table_rows[0], result.stdout
    # a plugin failing at some places only: one line listing exactly those places
    (partly,) = [line for line in lines if line.startswith("bad_in_d8 (failed)")]
    listed = partly.partition(" places: ")[2].partition(": as written")[0].split("; ")
    assert listed and all(place.startswith("D 8x8") for place in listed), partly
    assert "D 16x16" not in partly
    assert "different errors" in result.stderr


def test_unmarked_hook_function_is_a_warning(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_PLUGINS", "unmarked_hook")
    result = cli("plugins")
    assert result.exit_code == 0
    assert "sagan_register_attention" in result.stderr and "@hookimpl" in result.stderr


def test_recipe_validate_passes_a_valid_recipe_despite_an_unrelated_broken_plugin(
    cli, fake_entry_points
):
    fake_entry_points(broken="broken_plugin")
    result = cli("recipe", "validate", "smoke")
    assert result.exit_code == 0, result.output
    assert "✓ smoke" in result.stdout and "broken" in result.stderr


def test_unknown_disabled_name_is_a_warning(cli, monkeypatch):
    monkeypatch.setenv("SAGAN_DISABLED_PLUGINS", "sagn_pooled")
    result = cli("plugins", "--kind", "attention")
    assert result.exit_code == 0
    assert "SAGAN_DISABLED_PLUGINS names 'sagn_pooled'" in result.stderr
    assert "nothing was disabled" in result.stderr


@pytest.mark.parametrize(
    "disabled, keys",
    [
        ("sagan", ["model.attention.variant = 'sagan'"]),  # a plugin by name
        ("attention:sagan", ["model.attention.variant = 'sagan'"]),  # by kind:name
        ("sagan_cli.builtins.losses", ["loss.name = 'hinge'"]),  # a module
        # the distribution: every plugin of the recipe, in one paragraph
        ("sagan-cli", ["model.attention.variant = 'sagan'", "loss.name = 'hinge'", "8 plugins"]),
    ],
)
def test_a_recipe_needing_a_disabled_plugin_names_the_variable(cli, monkeypatch, disabled, keys):
    monkeypatch.setenv("SAGAN_DISABLED_PLUGINS", disabled)
    result = cli("recipe", "validate", "smoke")
    message = assert_clean_error(result, "SAGAN_DISABLED_PLUGINS", f"names '{disabled}'", *keys)
    assert "not a registered" not in message and "Did you mean" not in message
    assert message.count("SAGAN_DISABLED_PLUGINS, which names") == 1, message


def test_a_disabled_entry_point_is_named_where_its_plugin_is_missing(
    cli, monkeypatch, fake_entry_points
):
    fake_entry_points(mirror="mirror_attention")
    monkeypatch.setenv("SAGAN_DISABLED_PLUGINS", "mirror")
    result = cli("recipe", "validate", "smoke", "--set", "model.attention.variant=mirror_attention")
    assert_clean_error(result, "not a registered", "SAGAN_DISABLED_PLUGINS", "'mirror'")
    monkeypatch.setenv("SAGAN_DISABLED_PLUGINS", "sagan")
    refused = cli("plugins", "check", "sagan")  # refused before any check runs
    assert_clean_error(refused, "'sagan' is disabled", "SAGAN_DISABLED_PLUGINS")


def test_override_rows_may_set_the_parameters_of_the_plugin_they_select(cli, tmp_path):
    recipe = tmp_path / "rows.toml"
    recipe.write_text(
        textwrap.dedent(
            """
            name = "rows"
            [ablate.axes]
            block = [
                { "model.attention.variant" = "sagan", "model.attention.reduction" = 4 },
                { "model.attention.variant" = "residual", "model.attention.kernel_size" = 1 },
            ]
            """
        )
    )
    result = cli("ablate", str(recipe), "--dry-run", "--results", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "kernel_size=1" in result.stdout and "reduction=4" in result.stdout
    recipe.write_text(
        recipe.read_text().replace(
            '"model.attention.kernel_size" = 1', '"model.attention.heads" = 2'
        )
    )
    bad = cli("ablate", str(recipe), "--dry-run", "--results", str(tmp_path / "r"))
    assert_clean_error(
        bad, "Grid point #2", "model.attention.heads", "'residual' has no parameter 'heads'"
    )


# ---- a third-party package written from the guide alone ---------------------------------------

GUIDE_PLUGIN = '''
"""Squeeze-and-excitation and a global-context block, registered as sagan-cli attention."""

from pydantic import Field

from sagan_cli.api import AttentionPlugin, LayerContext, PluginParams, apply_weight_norm, hookimpl


class SEParams(PluginParams):
    reduction: int = Field(4, ge=1, description="bottleneck C/reduction")


def build_se(params: SEParams, context: LayerContext):
    import torch
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, channels, hidden):
            super().__init__()
            self.gate = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                nn.Conv2d(hidden, channels, 1), nn.Sigmoid(),
            )
            self.gamma = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x + self.gamma * x * self.gate(x)

    module = SqueezeExcite(context.channels, max(1, context.channels // params.reduction))
    return apply_weight_norm(module, context.weight_norm)


@hookimpl
def sagan_register_attention(register):
    register(
        AttentionPlugin(
            name="squeeze_excite", summary="SE gate as a residual block", params=SEParams,
            factory=build_se, identity_at_init=True, api_version=1,
        )
    )
'''


def install_as_distribution(
    folder, package: str, module_text: str, entry_points: bool = True
) -> None:
    """A package plus its .dist-info on a path: what pip leaves behind, found by importlib.metadata."""
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text(module_text)
    info = folder / f"{package}-0.3.0.dist-info"
    info.mkdir()
    name = package.replace("_", "-")
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.0\nRequires-Dist: sagan-cli>=0.2\n"
    )
    if entry_points:
        (info / "entry_points.txt").write_text(f"[sagan_cli]\nse = {package}\n")


@pytest.mark.slow
def test_a_package_written_from_the_guide_passes_the_checker_and_trains(tmp_path, tiny_recipe):
    install_as_distribution(tmp_path / "site", "sagan_squeeze", GUIDE_PLUGIN)
    env = sagan_subprocess_env(PYTHONPATH=str(tmp_path / "site"))
    listed = subprocess.run(
        sagan_command("plugins", "--kind", "attention", "--json"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    se = next(p for p in json.loads(listed.stdout) if p["name"] == "squeeze_excite")
    assert se["provider"] == "sagan-squeeze" and se["version"] == "0.3.0"
    checked = subprocess.run(
        sagan_command("plugins", "check", "squeeze_excite"), env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    places = len(check_places())
    assert f"{places} checks: {places} ok." in checked.stdout  # every place ran, all passed
    trained = subprocess.run(
        sagan_command(
            "train",
            str(tiny_recipe),
            "--set",
            "model.attention.variant=squeeze_excite",
            "--set",
            "train.steps=2",
            "--results",
            str(tmp_path / "r"),
            "-q",
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert trained.returncode == 0, trained.stderr


def test_a_package_without_an_entry_point_is_pointed_out(tmp_path):
    install_as_distribution(tmp_path / "site", "sagan_forgot", GUIDE_PLUGIN, entry_points=False)
    env = sagan_subprocess_env(PYTHONPATH=str(tmp_path / "site"))
    result = subprocess.run(
        sagan_command("recipe", "show", "smoke", "--set", "model.attention.variant=squeeze_excite"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "sagan-forgot 0.3.0 depends on sagan-cli but declares no" in result.stderr
    listing = subprocess.run(sagan_command("plugins"), env=env, capture_output=True, text=True)
    assert "sagan-forgot" in listing.stderr and listing.returncode == 0


def test_plugin_error_classes_are_exported_once():
    import sagan_cli.api as api
    from sagan_cli.errors import PluginError

    assert api.PluginError is PluginError
    assert set(api.__all__) <= set(dir(api))
    assert torch  # the API itself does not import torch (test_architecture checks the CLI)
