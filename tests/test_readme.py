"""The README stays true: every recipe key and built-in plugin documented, CI runs its command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO, sagan_subprocess_env

from sagan_cli.plugins import load_registry
from sagan_cli.recipe import host_field_paths

README = (REPO / "README.md").read_text()


def test_every_recipe_key_is_in_the_reference():
    missing = [
        path
        for path in host_field_paths()
        if f"`{path}`" not in README and f"`{path}`," not in README
    ]
    assert not missing, f"README's recipe reference lacks {missing}"


def test_every_builtin_plugin_is_listed():
    registry = load_registry()
    missing = [
        e.name for e in registry.all() if e.provider == "sagan-cli" and f"`{e.name}`" not in README
    ]
    assert not missing


def test_ci_runs_the_readme_test_command_verbatim():
    extracted = subprocess.run(
        [
            "awk",
            "/<!-- test-command -->/ {found=1; next} found && /^[^`]/ {print; exit}",
            "README.md",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == "pip install nox && nox -s tests"
    assert (
        "awk '/<!-- test-command -->/ {found=1; next} found && /^[^`]/ {print; exit}' README.md"
        in (REPO / ".ci" / "run").read_text()
    )


def test_quick_start_trains_the_smoke_recipe(tmp_path):
    """The quick start's command, run as written (from the repository), on a few steps."""
    assert "pip install . && sagan train recipes/smoke.toml" in README
    sagan = shutil.which("sagan") or str(Path(sys.executable).parent / "sagan")
    steps = [
        "--set",
        "train.steps=4",
        "--set",
        "train.sample_every=2",
        "--set",
        "train.log_every=2",
    ]
    result = subprocess.run(
        [
            sagan,
            "train",
            "recipes/smoke.toml",
            *steps,
            "--results",
            str(tmp_path),
            "--device",
            "cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=sagan_subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "smoke" / "runs").iterdir()
    assert f"run folder: {run}" in result.stdout
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "real.png",  # the data's own images, what the samples should look like
        "step-00000000.png",
        "step-00000002.png",
        "step-00000004.png",
    ]
    structure = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"structure"' in line
    ]
    assert [r["step"] for r in structure] == [0, 2, 4]


def test_the_exit_code_table_is_the_code_s_table():
    """The README's exit codes are generated from the one table the commands use."""
    from sagan_cli.outcomes import exit_code_table

    assert exit_code_table() in README
