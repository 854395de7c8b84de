"""The training loop: the session's iterations, its callbacks around them, stop signals.

    sagan train recipes/smoke.toml                  # CPU, about a minute
    sagan train sagan_full --device cuda            # the paper's method on shapes 64x64
    sagan train sagan_imagenet128 --nproc 4         # one run on 4 GPUs (torchrun + DDP)
    sagan train --resume results/smoke/runs/<id>    # continue an interrupted run

Stop signals are taken only at iteration boundaries (``sagan_cli.signals``): the
run finishes the iteration it is in, saves a checkpoint of it and exits 128 + N. The
loop writes the run's lifecycle into status.json (running, then its outcome); all other
side work is a callback's (``sagan_cli.train.callbacks``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import time
from typing import Any

import torch

from sagan_cli import checkpoint as ckpt
from sagan_cli.components import count_parameters
from sagan_cli.device import describe, synchronize
from sagan_cli.outcomes import RunStatus, signal_exit
from sagan_cli.plugins import Registry
from sagan_cli.results import RunDir, git_commit, now, versions
from sagan_cli.signals import StopRequests, exit_now
from sagan_cli.train.callbacks import Callback
from sagan_cli.train.callbacks.checkpoints import Checkpoints
from sagan_cli.train.observer import Observer
from sagan_cli.train.result import TrainResult
from sagan_cli.train.session import Diverged, TrainingSession


class Loop:
    """One run's iterations with ``callbacks`` around them (see ``sagan_cli.train.callbacks``).

    ``run`` is where the run's files go (written by rank 0 only); ``observer`` hears
    messages. ``run_to_end`` trains from the session's step to ``train.steps``.
    """

    def __init__(
        self,
        session: TrainingSession,
        run: RunDir,
        callbacks: list[Callback],
        observer: Observer,
        registry: Registry,
        resumed_from: str | None = None,
    ) -> None:
        self.session, self.run, self.callbacks = session, run, callbacks
        self.observer, self.registry, self.resumed_from = observer, registry, resumed_from
        self.world = session.world
        self.stop = StopRequests(self._announce_stop, self._abort)

    @property
    def writes(self) -> bool:
        return self.world.is_main

    # ---- what callbacks use ------------------------------------------------------------------

    def record(self, record: dict[str, Any], evaluation: bool = False) -> None:
        """Append a metrics record (and to eval.json when ``evaluation``); every callback hears it."""
        if not self.writes:
            return
        if evaluation:
            self.run.record_evaluation(record)
        else:
            self.run.append_metrics(record)
        for callback in self.callbacks:
            callback.on_record(record)

    def image(self, tag: str, step: int, image: Any) -> None:
        """A uint8 (3, H, W) picture of the run at ``step`` for every callback."""
        for callback in self.callbacks:
            callback.on_image(tag, step, image)

    def save(self) -> None:
        """A checkpoint of the session as it is (rank 0); non-finite weights have diverged."""
        if not self.writes:
            return
        try:
            ckpt.save_checkpoint(
                self.session.state(self.run.id),
                self.run.checkpoints,
                self.session.recipe.train.keep_checkpoints,
            )
        except ckpt.NonFiniteWeights as exc:
            raise Diverged(self.session.step, f"non-finite weights ({exc.where})") from None

    def status(self, **fields: Any) -> None:
        if self.writes:
            self.run.update_status(**fields)

    def _announce_stop(self, signum: int) -> None:
        name = signal.Signals(signum).name
        again = "; Ctrl-C again to stop now without saving" if signum == signal.SIGINT else ""
        self.observer.message(
            f"{name}: stopping after this iteration (step {self.session.step + 1}) with a "
            f"checkpoint{again}"
        )

    def _abort(self, signum: int) -> None:
        """A second stop signal: record it, say what was not saved, end the process now (from
        the signal thread, also while the main thread is deep inside an iteration)."""
        name = signal.Signals(signum).name
        kept = ckpt.list_checkpoints(self.run.checkpoints) if self.writes else []
        where = f"the last checkpoint, {kept[-1].name}," if kept else "no checkpoint yet; the run"
        with contextlib.suppress(Exception):
            self.status(
                status=RunStatus.INTERRUPTED,
                error=f"stopped at once by a second {name} (the iteration in progress not saved)",
                finished=now(),
            )
        exit_now(
            signal_exit(signum),
            f"{name} again: stopped at once. The iteration in progress (step "
            f"{self.session.step + 1}) was not saved; {where} is kept: re-run the same command "
            f"to resume from it.",
        )

    # ---- the loop ----------------------------------------------------------------------------

    def run_to_end(self) -> TrainResult:
        session = self.session
        self.status(
            status=RunStatus.RUNNING,
            started=now(),
            step=session.step,
            steps=session.recipe.train.steps,
            device=describe(session.device),
            precision=session.precision,
            world_size=self.world.size,
            threads=torch.get_num_threads(),
            execution=session.plan.describe(),
            versions=versions(session.recipe, self.registry),
            git_commit=git_commit(),
            host=platform.node(),
            pid=os.getpid(),
            parameters={
                "generator": count_parameters(session.generator),
                "discriminator": count_parameters(session.discriminator),
            },
            resumed_from=self.resumed_from,
            error=None,
        )
        try:
            with self.stop.installed():
                result = self._iterate()
            for callback in self._here(self.callbacks):
                callback.on_end(self, result)
            self._record_outcome(result)
            return result
        finally:
            for callback in self.callbacks:
                callback.close()

    def _iterate(self) -> TrainResult:
        session, cfg = self.session, self.session.recipe.train
        try:
            for callback in self._here(self.callbacks):
                callback.on_start(self)
            session.generator.train()
            session.discriminator.train()
            while session.step < cfg.steps:
                began = time.perf_counter()
                session.pending.losses.append(session.advance())
                step = session.step
                last = step == cfg.steps
                due = [c for c in self.callbacks if c.due(step, last)]
                if any(c.syncs for c in due):
                    synchronize(session.device)
                elapsed = time.perf_counter() - began
                session.pending.train_seconds += elapsed
                session.wall_time += elapsed
                side_began = time.perf_counter()
                if any(c.needs_finite for c in due):
                    session.pending_losses()  # nothing is logged, sampled or saved after a NaN
                for callback in self._here(due):
                    callback.on_step(self)
                session.wall_time += time.perf_counter() - side_began
                if step % cfg.log_every == 0:
                    self.status(step=step)
                if self.world.any(self.stop.signal is not None, session.device) and not last:
                    saved = any(isinstance(c, Checkpoints) for c in due)
                    return self._interrupted(saved_already=saved)
        except Diverged as stop:
            detail = (
                f"{stop}. The last checkpoint on disk is good (checkpoints are never written "
                f"with non-finite weights); lower the learning rates or change the loss and "
                f"start a new run"
            )
            self.record({"kind": "diverged", "step": stop.step})
            return TrainResult(self.run, RunStatus.DIVERGED, stop.step, detail)
        return TrainResult(self.run, RunStatus.DONE, session.step)

    def _here(self, callbacks: list[Callback]) -> list[Callback]:
        """The callbacks that act on this rank (all on rank 0; the others skip main-only ones,
        while still keeping their schedule: the checks of the losses are collectives)."""
        return callbacks if self.writes else [c for c in callbacks if not c.main_only]

    def _interrupted(self, saved_already: bool) -> TrainResult:
        """Stop at this iteration boundary: save it (unless just saved) and say how to resume."""
        signum = self.stop.signal or signal.SIGINT
        name = signal.Signals(signum).name
        try:
            self.session.pending_losses()
            if not saved_already:
                self.save()
            saved = "saved a checkpoint of it"
        except Diverged:
            saved = "the losses were not finite, so no checkpoint was saved"
        return TrainResult(
            self.run,
            RunStatus.INTERRUPTED,
            self.session.step,
            f"stopped by {name}; {saved}; re-run the same command to resume",
            signum,
            error=f"stopped by {name}",
        )

    def _record_outcome(self, result: TrainResult) -> None:
        fields: dict[str, Any] = {"status": result.status, "step": result.step, "finished": now()}
        if result.status == RunStatus.DONE:
            fields["wall_time_s"] = round(self.session.wall_time, 3)
        else:
            fields["error"] = result.error or result.detail
        if result.status == RunStatus.DIVERGED:
            fields["diverged_step"] = result.step
        self.status(**fields)
