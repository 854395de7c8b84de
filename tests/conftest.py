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


def pytest_addoption(parser):
    parser.addoption(
        "--runslow",
        action="store_true",
        help="also run the tests marked slow (real clusters, multi-process runs, InceptionV3 "
        "on CPU); `nox -s tests` and CI run them",
    )


def _runs_slow(config) -> bool:
    """Slow tests run with --runslow, or when -m names them (``-m slow``)."""
    return config.getoption("--runslow") or "slow" in (config.getoption("markexpr") or "")


def pytest_report_header(config):
    if not _runs_slow(config):
        return "slow tests: deselected (--runslow runs them too, as CI does)"
    return None


def pytest_collection_modifyitems(config, items):
    if not _runs_slow(config):
        slow = [item for item in items if "slow" in item.keywords]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if "slow" not in item.keywords]
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if skip is not None and "gpu" in item.keywords:
            item.add_marker(skip)
    # modules with cluster tests first, then those with slow ones: under pytest-xdist
    # (--dist loadfile: a module's tests, and so its module-scoped fixtures, on one worker)
    # the long modules start at once and the others fill the workers around them. A module's
    # tests stay together, so its module-scoped fixtures are built once in one process too.
    holds: dict[str, set[str]] = {}
    for item in items:
        holds.setdefault(item.module.__name__, set()).update(
            {"cluster", "slow"} & set(item.keywords)
        )
    items.sort(
        key=lambda item: (
            "cluster" not in holds[item.module.__name__],
            "slow" not in holds[item.module.__name__],
        )
    )


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
