"""Shared fixtures: a CLI runner, a fresh plugin registry per test, tiny recipes."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from helpers import FIXTURE_PLUGINS, TINY_RECIPE
from typer.testing import CliRunner

from sagan_cli.cli import app
from sagan_cli.plugins import get_registry


def pytest_collection_modifyitems(config, items):
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if skip is not None and "gpu" in item.keywords:
            item.add_marker(skip)
        _share_module_fixtures(item)
    # cluster tests first, then slow ones: under pytest-xdist the long tests start at once
    # and the quick ones fill the workers around them
    items.sort(key=lambda item: ("cluster" not in item.keywords, "slow" not in item.keywords))


def _share_module_fixtures(item) -> None:
    """Under pytest-xdist (--dist loadgroup), the tests that share an expensive module-scoped
    fixture (a trained grid, a server) run on one worker, which builds it once."""
    if item.get_closest_marker("xdist_group") is not None:
        return
    shared = sorted(
        name
        for name, definitions in item._fixtureinfo.name2fixturedefs.items()
        if definitions and definitions[-1].scope == "module"
    )
    if shared:
        group = f"{item.module.__name__}:{'+'.join(shared)}"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test sees only the plugins its own environment installs."""
    for name in (
        "SAGAN_DISABLED_PLUGINS",
        "SAGAN_PLUGINS",
        "SAGAN_DEBUG",
        "SAGAN_INCEPTION_WEIGHTS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS))
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No test reaches the network or the user's caches: downloads fail as they do here."""
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
    monkeypatch.setenv("SAGAN_CACHE_DIR", str(tmp_path_factory.mktemp("reference-cache")))


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    """A randomly initialised torch-fidelity InceptionV3 state dict, saved as a weights file."""
    from sagan_cli.evaluate.weights import write_random_inception

    return write_random_inception(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture
def cli():
    """Invoke ``sagan`` in-process: ``cli("plugins", "--json")`` -> typer Result."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):
        get_registry.cache_clear()
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.fixture
def contract_plugins(monkeypatch):
    """The fixture plugins that break (or keep) the contract in particular ways."""
    monkeypatch.setenv("SAGAN_PLUGINS", "contract_plugins")
    get_registry.cache_clear()


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Pretend the given ``name=module`` pairs are installed ``sagan_cli`` entry points."""

    def install(**modules: str) -> None:
        points = importlib.metadata.EntryPoints(
            importlib.metadata.EntryPoint(name=name, value=module, group="sagan_cli")
            for name, module in modules.items()
        )
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: points)
        get_registry.cache_clear()

    return install
