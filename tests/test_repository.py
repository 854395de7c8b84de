"""The repository holds code, recipes and docs: never run folders or results."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
from helpers import REPO

RUN_FILES = {"status.json", "metrics.jsonl", "eval.json", "experiment.json"}


def tracked_files() -> list[PurePosixPath]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [PurePosixPath(name) for name in listed.split("\0") if name]


def test_no_run_folder_or_result_is_committed():
    committed = [
        str(path)
        for path in tracked_files()
        if path.name in RUN_FILES
        or "runs" in path.parts
        or path.suffix == ".pt"
        or (path.parts[0] == "results" and path.name != "README.md")
    ]
    assert not committed, f"run folders or results are committed: {committed}"


def test_git_ignores_run_folders_wherever_a_test_writes_them():
    probe = "scratch-results/some-experiment/runs/0123456789ab/status.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{probe} would not be ignored by .gitignore"
