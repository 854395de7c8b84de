"""Shared fixtures: a CLI runner, a fresh plugin registry per test, tiny recipes."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sagan_cli.cli import app
from sagan_cli.plugins import get_registry

from helpers import FIXTURE_PLUGINS, TINY_RECIPE

def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test sees only the plugins its own environment installs."""
    for name in ("SAGAN_DISABLED_PLUGINS", "SAGAN_PLUGINS", "SAGAN_DEBUG", "SAGAN_INCEPTION_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS))
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


@pytest.fixture
def cli():
    """Invoke ``sagan`` in-process: ``cli("plugins", "--json")`` -> typer Result."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):
        get_registry.cache_clear()
        return runner.invoke(app, list(args), env=env)

    return invoke


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

