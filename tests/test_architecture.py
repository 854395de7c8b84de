"""The module structure docs/architecture.md describes: layers, no cycles, a light CLI import."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from helpers import REPO

PACKAGE = REPO / "sagan_cli"
DOC = (REPO / "docs" / "architecture.md").read_text()


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path) -> set[str]:
    """Every sagan_cli module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES}


def documented_layers() -> dict[str, int]:
    rows = re.findall(r"^\| (\d) \| `([\w/]+\.py)` \|", DOC, flags=re.MULTILINE)
    return {module_name(PACKAGE / path): int(layer) for layer, path in rows}


LAYERS = documented_layers()
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_every_module_is_in_the_module_map_and_every_entry_exists():
    empty = {n for n, p in MODULES.items() if p.name == "__init__.py" and not p.read_text().strip()}
    assert set(MODULES) - empty - {"sagan_cli"} <= set(LAYERS) | {"sagan_cli"}, sorted(
        set(MODULES) - empty - set(LAYERS)
    )
    assert set(LAYERS) <= set(MODULES), sorted(set(LAYERS) - set(MODULES))


def layer(name: str) -> int:
    if name in LAYERS:
        return LAYERS[name]
    return min(LAYERS[m] for m in LAYERS if m.startswith(name + "."))  # an empty package


def test_imports_point_down_the_layers():
    upward = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(source)
    ]
    assert not upward, upward


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(target) :] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_importing_the_cli_loads_neither_torch_nor_pandas():
    code = (
        "import sys, sagan_cli.cli, sagan_cli.api, sagan_cli.plugins\n"
        "sagan_cli.plugins.load_registry()\n"
        "heavy = [m for m in ('torch', 'torchvision', 'pandas', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    env_free = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert env_free.stdout.strip() == "", env_free.stdout


def test_builtins_and_the_example_plugin_use_only_the_public_api():
    """Plugin-facing names come from sagan_cli.api; never from the registry's module."""
    plugin_modules = [
        *(PACKAGE / "builtins").glob("*.py"),
        *(REPO / "plugins" / "sagan-extra-attention" / "sagan_extra_attention").glob("*.py"),
    ]
    for path in plugin_modules:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        assert "sagan_cli.plugins" not in imported, path
    example = plugin_modules[-2:]
    for path in example:
        sagan_imports = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("sagan_cli")
        }
        assert sagan_imports <= {"sagan_cli.api"}, (path, sagan_imports)


def unit(name: str) -> str:
    """The package (or top-level module) a module belongs to: sagan_cli.train.loop -> train."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_loops_between_the_packages_of_a_layer():
    """Within a layer, packages and modules depend on each other one way only: train may use
    inspect, but then inspect never uses train (module cycles are caught above)."""
    edges: dict[str, set[str]] = {}
    for source, targets in GRAPH.items():
        for target in targets:
            if layer(source) == layer(target) and unit(source) != unit(target):
                edges.setdefault(unit(source), set()).add(unit(target))
    loops = sorted(
        f"{a} <-> {b}"
        for a, targets in edges.items()
        for b in targets
        if a < b and _reaches(edges, b, a)
    )
    assert not loops, loops


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return False
