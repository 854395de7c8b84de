"""A run's records, pictures and outcome sent to its experiment trackers (``[track]``).

The run folder stays the source of truth: a tracker that fails mid-run is warned about
once and left out for the rest of the run, which goes on. A resumed run continues each
tracker's run (ids in ``tracking.json``) and does not log again the steps its earlier
attempt logged (the resume recomputes them identically).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sagan_cli import __version__
from sagan_cli.api import TrackedRun, Tracker
from sagan_cli.errors import describe_exception
from sagan_cli.trackers import STATE, flat_params, read_state, write_state
from sagan_cli.train.callbacks import Callback, Loop
from sagan_cli.train.result import TrainResult

SKIPPED = ("kind", "step", "final", "wall_time")
SAVE_EVERY_S = 5.0


class Tracking(Callback):
    main_only = True

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        self.trackers = dict(trackers)
        self.loop: Loop | None = None
        self.state: dict[str, Any] = {}
        self.logged_before = -1  # the last step an earlier attempt logged
        self.finished = False
        self.saved_at = 0.0

    def _call(self, name: str, what: str, call: Any) -> None:
        tracker = self.trackers.get(name)
        if tracker is None:
            return
        try:
            call(tracker)
        except Exception as exc:  # a tracker never stops a run
            del self.trackers[name]
            if self.loop is not None:
                self.loop.observer.message(
                    f"Warning: tracker '{name}' failed while {what} ({describe_exception(exc)}); "
                    f"the run goes on without it (its folder keeps every record)"
                )

    def on_start(self, loop: Loop) -> None:
        self.loop = loop
        run, recipe = loop.run, loop.session.recipe
        self.state = read_state(run.path)
        ids: dict[str, str] = self.state.setdefault("ids", {})
        self.logged_before = int(self.state.get("logged_step", -1))
        experiment = read_state(run.path.parent.parent)  # an ablation's parents, if any
        params = {
            **flat_params(recipe),
            "run_id": run.id,
            "seed": recipe.seed,
            "sagan_cli_version": __version__,
        }
        for name in list(self.trackers):

            def start(tracker: Tracker, name: str = name) -> None:
                ids[name] = tracker.start(
                    TrackedRun(
                        run_id=run.id,
                        name=f"{recipe.name}-{run.id}",
                        folder=str(run.path),
                        params=params,
                        resume_id=ids.get(name),
                        parent_id=experiment.get("parents", {}).get(name),
                        group=experiment.get("group"),
                    )
                )

            self._call(name, "starting its run", start)
        write_state(run.path, self.state)

    def on_record(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        if step <= self.logged_before or not self.trackers:
            return
        section = record.get("kind", "")
        metrics = {
            f"{section}/{key}": float(value)
            for key, value in record.items()
            if key not in SKIPPED
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        }
        tags = {"protocol": str(record["protocol"])} if "protocol" in record else {}
        for name in list(self.trackers):
            self._call(name, "logging metrics", lambda t: t.log_metrics(step, metrics, tags))
        if step > int(self.state.get("logged_step", -1)):
            self.state["logged_step"] = step
            if time.monotonic() - self.saved_at >= SAVE_EVERY_S:
                self._save()

    def _save(self) -> None:
        """The ids and the last step logged, into the run folder (at most every few seconds:
        a run killed outright may log again the steps of its last ``SAVE_EVERY_S``)."""
        if self.loop is not None:
            write_state(self.loop.run.path, self.state)
        self.saved_at = time.monotonic()

    def on_image(self, tag: str, step: int, image: Any) -> None:
        if step <= self.logged_before or not self.trackers:
            return
        if hasattr(image, "numpy"):  # the loop's pictures are tensors; trackers get numpy
            image = image.detach().cpu().numpy()
        image = np.ascontiguousarray(image, dtype=np.uint8)
        for name in list(self.trackers):
            self._call(name, "logging an image", lambda t: t.log_image(tag, step, image))

    def on_end(self, loop: Loop, result: TrainResult) -> None:
        for name in list(self.trackers):
            self._call(
                name, "saving the run's status", lambda t: t.log_file(str(loop.run.status_path))
            )
        self._finish(str(result.status))

    def _finish(self, status: str) -> None:
        if self.finished:
            return
        self.finished = True
        self._save()
        for name in list(self.trackers):
            self._call(name, "finishing its run", lambda t: t.finish(status))

    def close(self) -> None:
        self._finish("failed")  # ended without an outcome (a crash): said as failed


__all__ = ["STATE", "Tracking"]
