"""The SAGAN training loop: hinge (or any loss plugin), TTUR, EMA, exact resume.

    sagan train recipes/smoke.toml                  # CPU, about a minute
    sagan train sagan_full --device cuda            # the paper's method on shapes 64x64
    sagan train --resume results/smoke/runs/<id>    # continue an interrupted run

One iteration = ``d_steps`` discriminator updates on real and generated batches
(one D forward over both, concatenated), then one generator update, then the
EMA update. A checkpoint holds everything that determines the rest of the run
(weights, both optimisers, EMA, every RNG state, the data position), so a
resumed run continues bit for bit in deterministic mode.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import importlib.metadata
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from sagan_cli import __version__
from sagan_cli.components import (
    build_data_source,
    build_loss,
    build_networks,
    count_parameters,
    num_classes_for,
    plugin_for,
)
from sagan_cli.datasets.base import DataSource
from sagan_cli.device import autocast, available_memory, describe, effective_precision, synchronize
from sagan_cli.errors import CheckpointError, ResultsError, SaganError
from sagan_cli.fileio import atomic_write_text
from sagan_cli.model.networks import Generator
from sagan_cli.model.sampling import sample_images, save_grid
from sagan_cli.plugins import Registry
from sagan_cli.recipe import PLUGIN_SLOTS, Recipe, recipe_toml
from sagan_cli.results import RunDir, now, run_id
from sagan_cli.train import checkpoint as ckpt
from sagan_cli.train.data import BatchStream
from sagan_cli.train.ema import EMA

EXIT_DONE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 3, 130
SAMPLE_SEED_OFFSET = 1_000_003  # fixed z for grids and scores: a function of the run seed only
GRID_SIZE = 64


class Evaluator(Protocol):
    """Computes metrics of a generator (see ``sagan_cli.evaluate``)."""

    def evaluate(
        self, generator: Generator, step: int, metrics: list[str], num_samples: int
    ) -> dict[str, Any]: ...


class Observer:
    """Progress callbacks; the CLI renders them with rich, tests and ablations use their own."""

    def started(self, run: RunDir, start_step: int, total: int, device: str) -> None: ...

    def advanced(self, step: int) -> None: ...

    def logged(self, record: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class TrainResult:
    run: RunDir
    status: str
    step: int
    message: str

    @property
    def exit_code(self) -> int:
        return {"done": EXIT_DONE, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}.get(
            self.status, 1
        )


class Diverged(Exception):
    def __init__(self, step: int, d_loss: float, g_loss: float) -> None:
        super().__init__(f"non-finite loss at step {step} (D {d_loss}, G {g_loss})")
        self.step = step


def prepare_run(recipe: Recipe, run: RunDir) -> None:
    """Create the run folder with its resolved recipe, or check an existing one matches."""
    if run.exists():
        if run.id != run_id(recipe):
            raise ResultsError(
                f"{run.path} holds a run of a different recipe (its id is {run_id(recipe)}, the "
                f"folder says {run.id}). Was {run.recipe_path} edited? Restore it or start a new run."
            )
        return
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.recipe_path, recipe_toml(recipe))
    run.update_status(
        status="queued", run_id=run.id, experiment=run.path.parent.parent.name, created=now()
    )


@contextlib.contextmanager
def run_lock(run: RunDir):  # noqa: ANN201 - a context manager
    """Only one process trains a run at a time; the lock dies with its process (even on SIGKILL)."""
    lock_path = run.path / ".lock"
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ResultsError(
            f"{run.path} is being trained right now by pid {holder}. Wait for it to finish or "
            f"stop it; two processes must not write one run."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def versions(recipe: Recipe, registry: Registry) -> dict[str, Any]:
    found: dict[str, Any] = {
        "sagan-cli": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for dist in ("torch-fidelity", "torchvision"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    plugins = {}
    for slot in PLUGIN_SLOTS:
        plugin, _ = plugin_for(recipe, slot.path, registry)
        entry = registry.get(slot.kind, plugin.name, key=slot.path)
        plugins[slot.path] = f"{plugin.name} ({entry.provider} {entry.version})"
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


def resident_limit(device: torch.device) -> int:
    """Data up to a quarter of free device memory is kept resident as uint8."""
    return available_memory(device) // 4


@dataclass
class _Interval:
    """Per-step losses kept on the device until the next check (no sync per step)."""

    first_step: int = 1
    losses: list[torch.Tensor] = field(default_factory=list)
    train_seconds: float = 0.0


class TrainingSession:
    """Everything one run needs in memory; ``run()`` trains it to the end or to a stop."""

    def __init__(
        self,
        recipe: Recipe,
        run: RunDir,
        device: torch.device,
        registry: Registry,
        observer: Observer,
        source: DataSource | None = None,
    ) -> None:
        self.recipe, self.run, self.device, self.observer = recipe, run, device, observer
        self.evaluator: Evaluator | None = None
        self.registry = registry
        cfg = recipe.train
        self.precision = effective_precision(device, cfg.precision)
        self.source = source or build_data_source(recipe, registry)
        self.source.check()
        self.num_classes = num_classes_for(recipe, self.source)
        torch.manual_seed(recipe.seed)  # weight initialisation
        generator, discriminator = build_networks(recipe, self.num_classes, registry)
        memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.generator = generator.to(device).to(memory_format=memory_format)
        self.discriminator = discriminator.to(device).to(memory_format=memory_format)
        self.ema = EMA(self.generator, cfg.ema_decay, cfg.ema_start)
        self.loss = build_loss(recipe, registry)
        fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas, **fused
        )
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas, **fused
        )
        self.noise = torch.Generator(device=device).manual_seed(recipe.seed + 1)
        self.g_step = torch.compile(self.generator) if cfg.compile else self.generator
        self.d_step = torch.compile(self.discriminator) if cfg.compile else self.discriminator
        self.step = 0
        self.data_position = 0
        self.best_fid: float | None = None
        self.wall_time = 0.0
        self.data: BatchStream | None = None
        self.start_checkpoint: Path | None = None

    # ---- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "run_id": self.run.id,
            "step": self.step,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "ema": self.ema.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "data_position": self.data.position if self.data else self.data_position,
            "noise_rng": self.noise.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "best_fid": self.best_fid,
            "wall_time": self.wall_time,
        }

    def restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, self.device, self.run.path)
        if state["run_id"] != self.run.id:
            raise CheckpointError(
                f"Checkpoint {path} belongs to run {state['run_id']}, not {self.run.id}; it cannot "
                f"resume this run."
            )
        try:
            self.generator.load_state_dict(state["generator"])
            self.discriminator.load_state_dict(state["discriminator"])
            self.ema.model.load_state_dict(state["ema"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"Checkpoint {path} does not fit the networks of {self.run.recipe_path} "
                f"({str(exc).splitlines()[0]})."
            ) from None
        self.step = int(state["step"])
        self.data_position = int(state["data_position"])
        self.noise.set_state(state["noise_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.best_fid = state["best_fid"]
        self.wall_time = float(state["wall_time"])

    def resume_point(self, checkpoint_name: str | None) -> Path | None:
        """The checkpoint to start from: the named one, else the newest (None: start fresh)."""
        available = ckpt.list_checkpoints(self.run.checkpoints)
        if checkpoint_name is None:
            return available[-1] if available else None
        chosen = self.run.checkpoints / checkpoint_name
        if not chosen.is_file():
            names = ", ".join(p.name for p in available) or "none"
            raise CheckpointError(
                f"--checkpoint {checkpoint_name}: no such file in {self.run.checkpoints} (there: {names})."
            )
        return chosen

    def set_aside_newer_than(self, chosen: Path) -> None:
        """Checkpoints after ``chosen`` belong to an abandoned continuation: keep them aside."""
        newer = [p for p in ckpt.list_checkpoints(self.run.checkpoints) if p.name > chosen.name]
        if not newer:
            return
        aside = self.run.checkpoints / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for path in newer:
            path.rename(aside / path.name)
        self.observer.message(f"moved {len(newer)} newer checkpoint(s) to {aside}")

    # ---- one iteration ---------------------------------------------------------------------

    def _fake_labels(self, batch: int) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (batch,), generator=self.noise, device=self.device)

    def train_step(self) -> torch.Tensor:
        cfg = self.recipe.train
        batch = cfg.batch_size
        assert self.data is not None
        d_total = torch.zeros((), device=self.device)
        self.discriminator.requires_grad_(True)
        for _ in range(cfg.d_steps):
            real, real_labels = self.data.next()
            z = torch.randn(
                batch, self.recipe.model.z_dim, generator=self.noise, device=self.device
            )
            fake_labels = self._fake_labels(batch)
            with torch.no_grad(), autocast(self.device, self.precision):
                fake = self.g_step(z, fake_labels)
            labels = None
            if fake_labels is not None:
                assert (
                    real_labels is not None
                )  # conditional models are built only for labelled data
                labels = torch.cat([real_labels, fake_labels])
            with autocast(self.device, self.precision):
                logits = self.d_step(torch.cat([real, fake.to(real.dtype)]), labels).float()
            d_loss = self.loss.d_loss(logits[:batch], logits[batch:])
            penalty = self.loss.penalty(self._critic(real_labels), real, fake.to(real.dtype))
            if penalty is not None:
                d_loss = d_loss + penalty
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            d_total = d_total + d_loss.detach()

        self.discriminator.requires_grad_(False)  # G's update needs no D weight gradients
        z = torch.randn(batch, self.recipe.model.z_dim, generator=self.noise, device=self.device)
        fake_labels = self._fake_labels(batch)
        with autocast(self.device, self.precision):
            logits = self.d_step(self.g_step(z, fake_labels), fake_labels).float()
        g_loss = self.loss.g_loss(logits)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.ema.update(self.generator, self.step + 1)
        return torch.stack([d_total / cfg.d_steps, g_loss.detach()])

    def _critic(self, labels: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """D as a function of images alone (for penalties), conditioned on the real labels."""
        return lambda images: self.d_step(images, labels).float()

    # ---- side work -------------------------------------------------------------------------

    def check_finite(self, interval: _Interval) -> torch.Tensor | None:
        """Raise ``Diverged`` at the first non-finite step; return the interval's losses."""
        if not interval.losses:
            return None
        losses = torch.stack(interval.losses).cpu()
        bad = (~torch.isfinite(losses)).any(dim=1).nonzero()
        if len(bad):
            index = int(bad[0])
            raise Diverged(
                interval.first_step + index, float(losses[index, 0]), float(losses[index, 1])
            )
        return losses

    def gammas(self) -> dict[str, float]:
        found = {}
        for net_name, net in (("g", self.generator), ("d", self.discriminator)):
            for name, param in net.named_parameters():
                if name.startswith("attention.") and name.endswith("gamma"):
                    found[f"gamma_{net_name}{name.split('.')[1]}"] = param.detach().item()
        return found

    def log(self, interval: _Interval) -> None:
        losses = self.check_finite(interval)
        if losses is None:
            return
        steps = len(interval.losses)
        record = {
            "kind": "train",
            "step": self.step,
            "d_loss": float(losses[:, 0].mean()),
            "g_loss": float(losses[:, 1].mean()),
            "lr_g": self.opt_g.param_groups[0]["lr"],
            "lr_d": self.opt_d.param_groups[0]["lr"],
            "img_per_s": steps * self.recipe.train.batch_size / max(interval.train_seconds, 1e-9),
            "wall_time": self.wall_time,
            **self.gammas(),
        }
        self.run.append_metrics(record)
        self.observer.logged(record)
        interval.first_step = self.step + 1
        interval.losses.clear()
        interval.train_seconds = 0.0

    def write_samples(self) -> None:
        seed = self.recipe.seed + SAMPLE_SEED_OFFSET
        count = max(GRID_SIZE, self.recipe.train.structure_samples)
        images = sample_images(self.ema.model, count, seed, self.device, self.precision)
        save_grid(images[:GRID_SIZE], self.run.samples / f"step-{self.step:08d}.png")
        scores = self.source.structural_score(images[: self.recipe.train.structure_samples])
        if scores is not None:
            record = {"kind": "structure", "step": self.step, **scores}
            self.run.append_metrics(record)
            self.observer.logged(record)

    def evaluate(self, final: bool) -> None:
        assert self.evaluator is not None
        cfg = self.recipe.eval
        metrics: list[str] = list(cfg.metrics) if final else ["fid"]
        record = self.evaluator.evaluate(self.ema.model, self.step, metrics, cfg.num_samples)
        record = {
            "kind": "eval",
            "step": self.step,
            "final": final,
            "checkpoint": "training",
            **record,
        }
        if final:
            self.run.record_evaluation(record)
        else:
            self.run.append_metrics(record)
        self.observer.logged(record)
        fid = record.get("fid")
        if fid is not None and (self.best_fid is None or fid < self.best_fid):
            self.best_fid = fid
            ckpt.write_checkpoint({**self.state(), "fid": fid}, self.run.checkpoints / "best.pt")

    def evaluate_best(self) -> None:
        """Full metrics of best.pt (lowest in-training FID), recorded beside the final ones."""
        best = self.run.checkpoints / "best.pt"
        if self.evaluator is None or not best.is_file():
            return
        state = ckpt.load_checkpoint(best, self.device, self.run.path)
        generator = copy.deepcopy(self.ema.model)
        generator.load_state_dict(state["ema"])
        cfg = self.recipe.eval
        step = int(state["step"])
        record = self.evaluator.evaluate(generator, step, list(cfg.metrics), cfg.num_samples)
        record = {"kind": "eval", "step": step, "final": False, "checkpoint": "best.pt", **record}
        self.run.record_evaluation(record)
        self.observer.logged(record)

    def save(self) -> None:
        ckpt.save_checkpoint(self.state(), self.run.checkpoints, self.recipe.train.keep_checkpoints)

    # ---- the loop ----------------------------------------------------------------------------

    def prepare(self, checkpoint_name: str | None = None) -> None:
        """Restore the resume point and open the data: validation that changes no file."""
        cfg = self.recipe.train
        self.start_checkpoint = self.resume_point(checkpoint_name)
        if self.start_checkpoint is not None:
            self.restore(self.start_checkpoint)
        self.data = BatchStream(
            self.source.split("train"),
            cfg.batch_size,
            self.recipe.seed,
            self.device,
            self.recipe.data.hflip,
            position=self.data_position,
            resident_limit=resident_limit(self.device),
        )

    def run_to_end(self) -> TrainResult:
        cfg, run = self.recipe.train, self.run
        if self.start_checkpoint is not None:
            self.set_aside_newer_than(self.start_checkpoint)
            kept = [r for r in run.read_metrics() if r.get("step", 0) <= self.step]
            run.keep_metrics(kept)  # what was logged after the checkpoint is recomputed identically
            self.observer.message(f"resuming from {self.start_checkpoint.name} (step {self.step})")
        run.update_status(
            status="running",
            started=now(),
            step=self.step,
            steps=cfg.steps,
            device=describe(self.device),
            precision=self.precision,
            versions=versions(self.recipe, self.registry),
            git_commit=git_commit(),
            host=platform.node(),
            pid=os.getpid(),
            parameters={
                "generator": count_parameters(self.generator),
                "discriminator": count_parameters(self.discriminator),
            },
            resumed_from=self.start_checkpoint.name if self.start_checkpoint else None,
            error=None,
        )
        self.observer.started(run, self.step, cfg.steps, describe(self.device))
        if self.step == 0:
            self.write_samples()  # the untrained generator: every run's baseline
        interval = _Interval(first_step=self.step + 1)
        self.generator.train()
        self.discriminator.train()
        try:
            while self.step < cfg.steps:
                began = time.perf_counter()
                interval.losses.append(self.train_step())
                self.step += 1
                last = self.step == cfg.steps
                log_due = last or self.step % cfg.log_every == 0
                sample_due = last or self.step % cfg.sample_every == 0
                eval_due = bool(
                    self.evaluator
                    and self.recipe.eval.every
                    and self.step % self.recipe.eval.every == 0
                )
                checkpoint_due = last or self.step % cfg.checkpoint_every == 0
                if log_due:
                    synchronize(self.device)
                elapsed = time.perf_counter() - began
                interval.train_seconds += elapsed
                self.wall_time += elapsed
                self.observer.advanced(self.step)
                if log_due:
                    self.log(interval)
                side_began = time.perf_counter()
                if sample_due or eval_due or checkpoint_due:
                    self.check_finite(interval)  # nothing is sampled or saved after a NaN
                if sample_due:
                    self.write_samples()
                if eval_due:
                    self.evaluate(final=False)
                if checkpoint_due:
                    self.save()
                self.wall_time += time.perf_counter() - side_began
                if self.step % cfg.log_every == 0:
                    run.update_status(step=self.step)
        except Diverged as stop:
            message = (
                f"diverged: {stop}. Kept the last good checkpoint; lower the learning rates or "
                f"change the loss and start a new run."
            )
            run.append_metrics({"kind": "diverged", "step": stop.step})
            run.update_status(
                status="diverged",
                diverged_step=stop.step,
                step=stop.step,
                error=message,
                finished=now(),
            )
            return TrainResult(run, "diverged", stop.step, message)
        except KeyboardInterrupt:
            saved = ""
            try:
                self.check_finite(interval)
                self.save()
                saved = f"; saved a checkpoint at step {self.step}"
            except Diverged:
                pass
            run.update_status(
                status="interrupted",
                step=self.step,
                error="interrupted by the user",
                finished=now(),
            )
            return TrainResult(
                run,
                "interrupted",
                self.step,
                f"interrupted at step {self.step}{saved}; re-run the same command to resume",
            )
        if self.evaluator and self.recipe.eval.final:
            self.evaluate(final=True)
            self.evaluate_best()
        run.update_status(
            status="done", step=self.step, finished=now(), wall_time_s=round(self.wall_time, 3)
        )
        return TrainResult(run, "done", self.step, "done")


def train_run(
    recipe: Recipe,
    run: RunDir,
    device: torch.device,
    registry: Registry,
    observer: Observer | None = None,
    evaluator_factory: Callable[[Recipe, Any], Evaluator] | None = None,
    checkpoint_name: str | None = None,
    retry_diverged: bool = False,
) -> TrainResult:
    """Train (or resume, or skip if done) the run.

    Problems found before training starts (data, checkpoint, weights) raise without
    touching the folder; failures after it started are recorded in status.json.
    """
    observer = observer or Observer()
    prepare_run(recipe, run)
    with run_lock(run):
        status = run.read_status()
        if status.get("status") == "done" and checkpoint_name is None:
            return TrainResult(
                run, "done", status.get("step", recipe.train.steps), "already complete"
            )
        if status.get("status") == "diverged" and not retry_diverged and checkpoint_name is None:
            return TrainResult(
                run,
                "diverged",
                status.get("diverged_step", 0),
                f"{status.get('error')} (not resumed)",
            )
        previous = torch.are_deterministic_algorithms_enabled()
        if recipe.train.deterministic and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # CUDA's fused attention backward has no deterministic kernel: warn there instead of
        # failing. Bit-exact resume is guaranteed (and tested) on CPU.
        torch.use_deterministic_algorithms(
            recipe.train.deterministic, warn_only=device.type == "cuda"
        )
        try:
            # Pre-flight: errors here leave the run folder exactly as it was.
            session = TrainingSession(recipe, run, device, registry, observer)
            session.prepare(checkpoint_name)
            if evaluator_factory is not None and (recipe.eval.every or recipe.eval.final):
                session.evaluator = evaluator_factory(recipe, session.source)
            try:
                return session.run_to_end()
            except SaganError as exc:
                run.update_status(status="failed", error=str(exc), finished=now())
                raise
            except Exception as exc:
                atomic_write_text(run.path / "error.log", traceback.format_exc())
                run.update_status(
                    status="failed", error=f"{type(exc).__name__}: {exc}", finished=now()
                )
                raise
        finally:
            torch.use_deterministic_algorithms(previous)
