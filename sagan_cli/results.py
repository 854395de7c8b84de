"""Run folders: layout, ids, their lifecycle (creation, the training lock, provenance) and
reading and writing their files.

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
ignored when read. Only the process holding a run's lock (``RunLock``) writes
its status and metrics, so concurrent commands never overwrite each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sagan_cli import __version__
from sagan_cli.errors import ResultsError
from sagan_cli.fileio import atomic_write_json, atomic_write_text, remove_stale_temp_files
from sagan_cli.outcomes import RunStatus
from sagan_cli.plugins import Registry
from sagan_cli.recipe import PLUGIN_SLOTS, Recipe, recipe_dict, recipe_toml, table_at

# Fields that name or describe a run without changing what it computes.
# Keys that name, present or schedule a run without changing what it computes; they never
# enter its id, so adding one keeps every existing run id (and re-runs find their runs).
NOT_IN_IDENTITY = (
    "name",
    "description",
    "ablate",
    "launch",
    "logging",
    "track",
    "train.sync_batchnorm",
    "train.compile",
    "train.memory_format",
)


class RunBusy(ResultsError):
    """Another process holds the run's lock (it is being trained right now)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Keys added after 0.1 that do change results enter a run's identity only when set away
# from their default, so every existing run keeps its id.
ADDED_SINCE_0_1 = {
    "train.bf16_on_cpu": False,
    "train.max_loss": 1e5,
    "train.augment": {"name": "none"},
    "eval.feature_extractor": ["inception-v3-compat"],
    "eval.prc_neighborhood": 3,
    "eval.dc_neighborhood": 5,
}


def run_identity(recipe: Recipe) -> dict[str, Any]:
    """What determines a run's outcome: the resolved recipe minus ``NOT_IN_IDENTITY`` (and
    ``ADDED_SINCE_0_1`` keys at their defaults)."""
    data = recipe_dict(recipe)
    for key in (*NOT_IN_IDENTITY, *ADDED_SINCE_0_1):
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        if key not in ADDED_SINCE_0_1 or node.get(last) == ADDED_SINCE_0_1[key]:
            node.pop(last, None)
    return data


def legacy_run_id(recipe: Recipe) -> str:
    """The id sagan-cli 0.1 gave this recipe (it counted train.compile, then a boolean, in):
    folders named so are found and continued."""
    identity = run_identity(recipe)
    identity["train"]["compile"] = recipe.train.compile is True
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def config_identity(recipe: Recipe) -> dict[str, Any]:
    """The run identity minus the seed: what the seeds of one configuration share."""
    identity = run_identity(recipe)
    identity.pop("seed", None)
    return identity


def run_id(recipe: Recipe) -> str:
    """A stable id from the run identity, so re-running a command finds its runs."""
    canonical = json.dumps(run_identity(recipe), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")  # a step checkpoint: checkpoints/step-00001000.pt


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

    @property
    def attention_figure(self) -> Path:
        """G's newest attention figure (written when figures are drawn: TensorBoard, trackers)."""
        return self.path / "attention.png"

    @property
    def real_grid(self) -> Path:
        """The data's first images as a grid, beside the sample grids (written once)."""
        return self.samples / "real.png"

    def exists(self) -> bool:
        return self.recipe_path.is_file()

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def status_damage(self) -> str | None:
        """What is wrong with status.json, or None when it holds a status. Every run folder
        gets one with its recipe, so a missing or unparsable one is damage (a disk fault, a
        hand edit), not a run that has not started."""
        try:
            status = json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "its status.json is missing"
        except OSError as exc:
            return f"its status.json cannot be read ({exc.strerror or exc})"
        except ValueError as exc:
            return f"its status.json is not valid JSON ({exc})"
        if not isinstance(status, dict):
            return "its status.json holds no JSON object"
        return None

    def checkpoint_steps(self) -> list[int]:
        """The steps of the step checkpoints on disk, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = (STEP_FILE.match(p.name) for p in self.checkpoints.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def read_status(self) -> dict[str, Any]:
        """The status, or {} when it is missing, unreadable or not (yet) an object."""
        try:
            status = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    @property
    def status(self) -> RunStatus:
        """What status.json records (``queued`` for a folder that records nothing yet)."""
        return RunStatus.read(self.read_status())

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
        return self._read_metrics()[0]

    def _read_metrics(self) -> tuple[list[dict[str, Any]], int]:
        """Records, and how many lines could not be parsed (a crash tears at most the last)."""
        try:
            text = self.metrics_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return [], 0
        records, bad = [], 0
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
        return records, bad

    def read_evaluations(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads(self.eval_path.read_text())["evaluations"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return []

    def record_evaluation(self, record: dict[str, Any]) -> None:
        """Append to metrics.jsonl and to eval.json's list (earlier evaluations are kept)."""
        self.append_metrics(record)
        atomic_write_json(self.eval_path, {"evaluations": [*self.read_evaluations(), record]})

    def keep_metrics_until(self, step: int) -> Path | None:
        """Rewrite metrics.jsonl without records after ``step`` (resume recomputes them).

        If some lines cannot be parsed, the original file is first kept aside
        (returned), so nothing a user might need is ever dropped silently.
        """
        records, bad = self._read_metrics()
        aside = None
        if bad:
            aside = self.path / f"metrics.jsonl.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.write_bytes(self.metrics_path.read_bytes())
        text = "".join(
            json.dumps(r, default=float) + "\n" for r in records if r.get("step", 0) <= step
        )
        atomic_write_text(self.metrics_path, text)
        return aside


def prepare_run(recipe: Recipe, run: RunDir, **status: Any) -> None:
    """Create the run folder with its resolved recipe, or check an existing one matches.

    ``status`` fields join the first status write of a new run.
    """
    if run.exists():
        if run.id not in (run_id(recipe), legacy_run_id(recipe)):
            raise ResultsError(
                f"{run.path} holds a run of a different recipe (its id is {run_id(recipe)}, the "
                f"folder says {run.id}). Was {run.recipe_path} edited? Restore it or start a new run."
            )
        return
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.recipe_path, recipe_toml(recipe))
        run.update_status(
            status=RunStatus.QUEUED,
            run_id=run.id,
            experiment=run.path.parent.parent.name,
            created=now(),
            **status,
        )
    except OSError as exc:
        raise ResultsError(
            f"Cannot create the run folder {run.path}: {exc.strerror or exc}. Check that the "
            f"results folder is writable and the disk has space (--results chooses another)."
        ) from None


@contextlib.contextmanager
def run_lock(run: RunDir) -> Iterator[None]:
    """Only one process trains a run at a time; the lock dies with its process (even SIGKILL).

    The holder's pid and host sit in ``.lock.owner`` so a refused process can say who.
    Stale temp files of a killed writer are removed once the lock is held.
    """
    lock = FileLock(str(run.lock_path), timeout=0)
    owner = run.path / ".lock.owner"
    try:
        lock.acquire()
    except Timeout:
        raise RunBusy(busy_message(run)) from None
    except OSError as exc:
        raise ResultsError(
            f"Cannot lock the run folder {run.path}: {exc.strerror or exc}. Check that it is "
            f"writable by you."
        ) from None
    try:
        owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}")
        remove_stale_temp_files(run.path)
        yield
    finally:
        lock.release()


def busy_message(run: RunDir) -> str:
    try:
        holder = (run.path / ".lock.owner").read_text().strip() or "another process"
    except OSError:
        holder = "another process"
    return (
        f"{run.path} is being trained right now by {holder}. Wait for it to finish or stop "
        f"it; two processes must not write one run."
    )


def trained_elsewhere(run: RunDir) -> bool:
    """Whether another process holds the run's lock right now (it may not have written
    ``running`` into the status yet)."""
    if not run.lock_path.exists():
        return False
    lock = FileLock(str(run.lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:  # cannot lock at all: not "busy"; taking the lock reports why
        return False
    lock.release()
    return False


def versions(recipe: Recipe, registry: Registry) -> dict[str, Any]:
    """Package versions and the provider of every plugin the recipe uses (for status.json)."""
    found: dict[str, Any] = {"sagan-cli": __version__, "python": platform.python_version()}
    torch = sys.modules.get("torch")  # the running build's full version (2.x.y+cu130)
    if torch is not None:
        found["torch"] = torch.__version__
    for dist in ("torch", "torch-fidelity", "torchvision"):
        if dist in found:
            continue
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    plugins = {}
    for slot in PLUGIN_SLOTS:
        name = getattr(table_at(recipe, slot.path), slot.name_key)
        entry = registry.get(slot.kind, name, key=slot.path)
        plugins[slot.path] = f"{name} ({entry.provider} {entry.version})"
    found["plugins"] = plugins
    return found


def git_commit() -> str | None:
    """The sagan-cli checkout's commit (with -dirty), when it runs from one."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()

    try:
        commit, dirty = (
            git("rev-parse", "HEAD"),
            git("status", "--porcelain", "--untracked-files=no"),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def open_run_folder(path: Path, registry: Registry) -> tuple[RunDir, Recipe]:
    """An existing run folder and its resolved recipe (for eval, attention, sample)."""
    from sagan_cli.recipe import load_recipe

    run = RunDir(path.expanduser())
    if not run.exists():
        raise ResultsError(
            f"{path} is not a run folder (no recipe.toml). Give results/<experiment>/runs/<id>."
        )
    return run, load_recipe(run.recipe_path, registry=registry)


def run_dir_for(root: Path, experiment: str, recipe: Recipe) -> RunDir:
    return run_dir_in(root / experiment / "runs", recipe)


def run_dir_in(runs: Path, recipe: Recipe) -> RunDir:
    """The recipe's run folder under ``runs``: an existing 0.1-style folder, else the current id."""
    legacy = RunDir(runs / legacy_run_id(recipe))
    current = RunDir(runs / run_id(recipe))
    return legacy if legacy.exists() and not current.exists() else current


def list_runs(experiment: Path) -> list[RunDir]:
    runs = experiment / "runs"
    if not runs.is_dir():
        return []
    return [RunDir(p) for p in sorted(runs.iterdir()) if (p / "recipe.toml").is_file()]
