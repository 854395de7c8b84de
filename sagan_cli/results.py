"""Run-folder layout, run ids, atomic writes, and reading/writing metrics.

    results/<experiment>/runs/<run_id>/
        recipe.toml     resolved recipe (never rewritten once the run exists)
        status.json     queued|running|done|failed|diverged|interrupted, times, versions,
                        device, error
        metrics.jsonl   one JSON object per logged step or evaluation
        eval.json       every evaluation of the run, with its provenance
        checkpoints/    step-XXXXXXXX.pt (last K), best.pt (by FID)
        samples/        step-XXXXXXXX.png grids from a fixed z

Every file except metrics.jsonl is written atomically (temp file, fsync,
rename); metrics.jsonl is append-only, and a torn last line from a crash is
ignored when read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sagan_cli.fileio import atomic_write_json, atomic_write_text
from sagan_cli.recipe import Recipe, recipe_dict

# Fields that name or describe a run without changing what it computes.
PRESENTATION_ONLY = ("name", "description", "ablate")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_identity(recipe: Recipe) -> dict[str, Any]:
    """What determines a run's outcome: the resolved recipe minus presentation-only fields."""
    data = recipe_dict(recipe)
    for key in PRESENTATION_ONLY:
        data.pop(key, None)
    return data


def config_identity(recipe: Recipe) -> dict[str, Any]:
    """The run identity minus the seed: what the seeds of one configuration share."""
    identity = run_identity(recipe)
    identity.pop("seed", None)
    return identity


def run_id(recipe: Recipe) -> str:
    """A stable id from the run identity, so re-running a command finds its runs."""
    canonical = json.dumps(run_identity(recipe), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunDir:
    """One run folder and the files in it."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def recipe_path(self) -> Path:
        return self.path / "recipe.toml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def eval_path(self) -> Path:
        return self.path / "eval.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    def exists(self) -> bool:
        return self.recipe_path.is_file()

    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def update_status(self, **fields: Any) -> dict[str, Any]:
        status = {**self.read_status(), **fields, "updated": now()}
        atomic_write_json(self.status_path, status)
        return status

    def append_metrics(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
            handle.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        return records

    def read_evaluations(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads(self.eval_path.read_text())["evaluations"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return []

    def record_evaluation(self, record: dict[str, Any]) -> None:
        """Append to metrics.jsonl and to eval.json's list (earlier evaluations are kept)."""
        self.append_metrics(record)
        atomic_write_json(self.eval_path, {"evaluations": [*self.read_evaluations(), record]})

    def keep_metrics(self, keep: Iterable[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl with only ``keep`` (resume drops steps after its checkpoint)."""
        text = "".join(json.dumps(r, default=float) + "\n" for r in keep)
        atomic_write_text(self.metrics_path, text)


def run_dir_for(root: Path, experiment: str, recipe: Recipe) -> RunDir:
    return RunDir(root / experiment / "runs" / run_id(recipe))


def list_runs(experiment: Path) -> list[RunDir]:
    runs = experiment / "runs"
    if not runs.is_dir():
        return []
    return [RunDir(p) for p in sorted(runs.iterdir()) if (p / "recipe.toml").is_file()]
