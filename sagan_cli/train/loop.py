"""The SAGAN training loop: hinge (or any loss plugin), TTUR, EMA, exact resume.

    sagan train recipes/smoke.toml                  # CPU, about a minute
    sagan train sagan_full --device cuda            # the paper's method on shapes 64x64
    sagan train sagan_imagenet128 --nproc 4         # one run on 4 GPUs (torchrun + DDP)
    sagan train --resume results/smoke/runs/<id>    # continue an interrupted run

One iteration = ``d_steps`` discriminator updates on real and generated batches
(one D forward over both, concatenated), then one generator update, then the
EMA update. A checkpoint holds everything that determines the rest of the run
(weights, both optimisers, EMA, every RNG state, the data position), so a
resumed run continues bit for bit in deterministic mode.

SIGINT and SIGTERM (what schedulers send before they kill) are taken only at
iteration boundaries: the run finishes the iteration it is in, saves a
checkpoint of it and exits 130 (SIGINT) or 143 (SIGTERM). A second Ctrl-C stops
at once without saving (the last periodic checkpoint remains).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import platform
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sagan_cli import checkpoint as ckpt
from sagan_cli.api import DataSource
from sagan_cli.components import (
    augment_generator,
    build_augment,
    build_data_source,
    build_loss,
    build_networks,
    check_augment,
    check_data,
    count_parameters,
    num_classes_for,
    origin_in_traceback,
    partners_by_size,
    plugin_for,
    verify_networks,
)
from sagan_cli.device import (
    at_least_fp32,
    autocast,
    available_memory,
    convert_memory_format,
    default_dtype,
    describe,
    effective_precision,
    synchronize,
)
from sagan_cli.errors import (
    CheckpointError,
    ResultsError,
    RunFailed,
    SaganError,
    describe_exception,
)
from sagan_cli.fileio import atomic_write_text
from sagan_cli.imagefiles import save_grid
from sagan_cli.inspect.figure import LayerMaps, figure_array, render
from sagan_cli.inspect.maps import (
    Layer,
    attention_layers,
    auto_queries,
    captured_inputs,
    layer_statistics,
    maps_of,
    query_maps,
)
from sagan_cli.model.networks import Generator
from sagan_cli.model.sampling import fixed_inputs, sample_images, to_uint8
from sagan_cli.outcomes import ExitCode, RunStatus, signal_exit
from sagan_cli.plugins import Registry, attributed
from sagan_cli.recipe import Recipe
from sagan_cli.results import RunDir, git_commit, now, prepare_run, run_lock, versions
from sagan_cli.train import estimate
from sagan_cli.train.data import BatchStream
from sagan_cli.train.distributed import SINGLE, World, synchronise_batch_norm
from sagan_cli.train.ema import EMA
from sagan_cli.train.execution import choose_execution
from sagan_cli.train.observer import Observer, Observers

# What schedulers and users send to stop a run: Ctrl-C, SIGTERM (scancel, Kubernetes,
# preemption) and SIGUSR1/SIGUSR2 (SLURM's warning before a time limit, --signal). Each
# stops the run at the next iteration boundary with a checkpoint; the exit code is 128 + N.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
DIVERGED_LOGS = 3  # consecutive log lines beyond train.max_loss that count as diverged
SAMPLE_SEED_OFFSET = 1_000_003  # fixed z for grids and scores: a function of the run seed only
GRID_SIZE = 64


class Evaluator(Protocol):
    """Computes metrics of a generator (see ``sagan_cli.evaluate``)."""

    def evaluate(
        self,
        generator: Generator,
        step: int,
        metrics: list[str],
        num_samples: int,
        final: bool,
        checkpoint: str,
    ) -> dict[str, Any]: ...


@dataclass
class TrainResult:
    run: RunDir
    status: RunStatus
    step: int
    detail: str = ""
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.status == RunStatus.INTERRUPTED:
            return signal_exit(self.signal or signal.SIGINT)
        return {RunStatus.DONE: ExitCode.DONE, RunStatus.DIVERGED: ExitCode.DIVERGED}.get(
            self.status, ExitCode.CRASH
        )

    def describe(self) -> str:
        return f"{self.status} at step {self.step}" + (f": {self.detail}" if self.detail else "")


class Diverged(Exception):
    def __init__(self, step: int, why: str) -> None:
        super().__init__(why)
        self.step = step


WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # sent ahead of a kill: never fatal here
_held: list[int] = []  # warning signals that arrived before a training loop could take them


def hold_warning_signals() -> None:
    """From now on SIGUSR1/SIGUSR2 (a scheduler's warning before a time limit or preemption)
    are noted instead of killing the process or reaching a launcher's own handler (submitit
    raises on them); the next training loop stops at its first boundary when one arrived.
    Ctrl-C and SIGTERM keep their meaning: during set-up they stop at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    for warning in WARNING_SIGNALS:
        signal.signal(warning, lambda signum, frame: _held.append(signum))


class StopRequests:
    """Stop signals become a flag read at iteration boundaries (main thread only).

    ``announce(signum)`` is called at once when the first one arrives, so the
    user knows the signal was taken; a second Ctrl-C stops at once.
    """

    def __init__(self, announce: Callable[[int], None] = lambda signum: None) -> None:
        self.signal: int | None = None
        self.announce = announce

    def request(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            self.announce(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
            self.request(signum)

        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        if _held:
            self.request(_held.pop())
            _held.clear()
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)


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
    """One run in memory: networks, optimisers, EMA, data and RNG; ``advance()`` is one iteration.

    ``run`` may be None (benchmarks): nothing is then written. ``run_to_end`` is the
    full loop with logging, samples, evaluation, checkpoints and signals.
    """

    def __init__(
        self,
        recipe: Recipe,
        device: torch.device,
        registry: Registry,
        observer: Observer | None = None,
        source: DataSource | None = None,
        run: RunDir | None = None,
        world: World = SINGLE,
    ) -> None:
        self.recipe, self.run, self.device = recipe, run, device
        self.observer = observer or Observer()
        self.world = world
        self.evaluator: Evaluator | None = None
        self.registry = registry
        cfg = recipe.train
        self.precision = effective_precision(device, cfg.precision, on_cpu=cfg.bf16_on_cpu)
        self.source = source or build_data_source(recipe, registry)
        if source is None:
            with self.observer.phase("checking the data"):
                check_data(self.source, registry)
        self.num_classes = num_classes_for(recipe, self.source)
        torch.manual_seed(recipe.seed)  # weight initialisation
        self.partners = partners_by_size(recipe, registry, self.source)
        with self.observer.phase("building the networks"):
            generator, discriminator = build_networks(
                recipe, self.num_classes, registry, self.source
            )
        self.loss = build_loss(recipe, registry)
        loss_entry, _ = plugin_for(recipe, "loss", registry)
        # a fresh loss object for the dry run: plugins may count their calls
        trial_loss = (build_loss(recipe, registry), loss_entry)
        # the dry run sees the networks as training will: on the device, in its layout and
        # precision, so a plugin that breaks there fails here with a paragraph
        self.execution = choose_execution(recipe, device)
        layout = self.execution.memory_format
        self.generator = convert_memory_format(generator.to(device), layout)
        self.discriminator = convert_memory_format(discriminator.to(device), layout)
        with self.observer.phase("checking the networks on a tiny batch"):
            verify_networks(
                self.generator,
                self.discriminator,
                recipe.model.z_dim,
                self.num_classes,
                trial_loss,
                precision=self.precision,
            )
        if world.distributed and cfg.sync_batchnorm:
            synchronise_batch_norm(self.generator)
        self.augment = build_augment(recipe, self.num_classes, registry)
        if self.augment is not None:
            self.augment.to(device)
            check_augment(self.augment, recipe.data.resolution, device)
        self.ema = EMA(self.generator, cfg.ema_decay, cfg.ema_start)
        fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas, **fused
        )
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas, **fused
        )
        # z and fake labels are drawn on the CPU and moved: a seed gives the same numbers on
        # every device, so a CUDA run can be checked against a CPU reference step for step
        self.noise = torch.Generator().manual_seed(recipe.seed + 1)
        self.g_train, self.d_train = self._training_wrappers()
        compiled = self.execution.compile
        self.g_step = torch.compile(self.generator) if compiled else self.generator
        self.d_step = torch.compile(self.discriminator) if compiled else self.discriminator
        self.step = 0
        self.data_position = 0
        self.best_fid: float | None = None
        self.wall_time = 0.0
        self.data: BatchStream | None = None
        self.start_checkpoint: Path | None = None
        self.stop = StopRequests(self._announce_stop)
        self.interval = _Interval()
        self.logs_over_bound = 0  # consecutive log lines with a loss beyond train.max_loss

    def _training_wrappers(self) -> tuple[Any, Any]:
        """The modules whose backward updates weights: DDP-wrapped when data-parallel."""
        if not self.world.distributed:
            return self.generator, self.discriminator
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.generator, device_ids=ids), DDP(self.discriminator, device_ids=ids)

    def _announce_stop(self, signum: int) -> None:
        name = signal.Signals(signum).name
        again = "; Ctrl-C again to stop now without saving" if signum == signal.SIGINT else ""
        self.observer.message(
            f"{name}: stopping after this iteration (step {self.step + 1}) with a checkpoint{again}"
        )

    # ---- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "run_id": self.run.id if self.run else "",
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
            # losses of steps not yet logged: a run stopped between log lines resumes them
            "interval_losses": torch.stack(self.interval.losses).cpu()
            if self.interval.losses
            else torch.zeros(0, 2),
            "interval_seconds": self.interval.train_seconds,
            "logs_over_bound": self.logs_over_bound,
        }

    def restore(self, path: Path) -> None:
        assert self.run is not None
        state = ckpt.load_checkpoint(path, self.device, self.run.id, self.run.path)
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
        self.logs_over_bound = int(state.get("logs_over_bound", 0))
        pending = state.get("interval_losses", torch.zeros(0, 2)).to(self.device)
        self.interval = _Interval(
            self.step - len(pending) + 1, list(pending), float(state.get("interval_seconds", 0.0))
        )

    def resume_point(self, checkpoint_name: str | None) -> Path | None:
        """The checkpoint to start from: the named one, else the newest (None: start fresh)."""
        assert self.run is not None
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
        assert self.run is not None
        newer = [p for p in ckpt.list_checkpoints(self.run.checkpoints) if p.name > chosen.name]
        if not newer:
            return
        aside = self.run.checkpoints / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for path in newer:
            path.rename(aside / path.name)
        self.observer.message(f"moved {len(newer)} newer checkpoint(s) to {aside}")

    # ---- one iteration ---------------------------------------------------------------------

    def open_data(self, position: int = 0, resident: int | None = None) -> None:
        """Start the real-image stream at ``position`` (images consumed so far)."""
        cfg = self.recipe.train
        self.data = BatchStream(
            self.source.split("train"),
            cfg.batch_size,
            self.recipe.seed,
            self.device,
            self.recipe.data.hflip,
            position=position,
            resident_limit=resident_limit(self.device) if resident is None else resident,
            rank=self.world.rank,
            world_size=self.world.size,
            cache_key=json.dumps([self.source.identity(), "train"], sort_keys=True, default=str),
        )

    def _noise(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's rows of the global draw of z (and fake labels): one process's numbers."""
        rows = slice(self.world.rank * batch, (self.world.rank + 1) * batch)
        total = batch * self.world.size
        # drawn in float32 whatever the run's precision: an fp64 run sees the fp32 run's noise
        z = torch.randn(total, self.recipe.model.z_dim, generator=self.noise, dtype=torch.float32)
        z = z[rows].to(torch.get_default_dtype())
        labels = None
        if self.num_classes:
            labels = torch.randint(self.num_classes, (total,), generator=self.noise)[rows]
            labels = labels.to(self.device, non_blocking=True)
        return z.to(self.device, non_blocking=True), labels

    def advance(self) -> torch.Tensor:
        """One iteration (D update(s), G update, EMA); returns (D loss, G loss) on the device."""
        losses = self.train_step()
        self.step += 1
        return losses

    def train_step(self) -> torch.Tensor:
        cfg = self.recipe.train
        batch = cfg.batch_size // self.world.size
        assert self.data is not None
        d_total = torch.zeros((), device=self.device)
        self.discriminator.requires_grad_(True)
        for d_index in range(cfg.d_steps):
            real, real_labels = self.data.next()
            z, fake_labels = self._noise(batch)
            with torch.no_grad(), autocast(self.device, self.precision):
                fake = self.g_step(z, fake_labels)
            labels = None
            if fake_labels is not None:
                assert real_labels is not None  # conditional models need labelled data
                labels = torch.cat([real_labels, fake_labels])
            with autocast(self.device, self.precision):
                both = self._augmented(torch.cat([real, fake.to(real.dtype)]), "d", d_index)
                logits = at_least_fp32(self.d_train(both, labels))
            d_loss = self.loss.d_loss(logits[:batch], logits[batch:])
            # Gradient penalties differentiate through D's gradient: the maths attention path
            # has second derivatives, the fused CPU/CUDA kernels do not.
            with sdpa_kernel([SDPBackend.MATH]):
                penalty = self.loss.penalty(self._critic(real_labels), real, fake.to(real.dtype))
            if penalty is not None:
                d_loss = d_loss + penalty
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            d_total = d_total + d_loss.detach()

        self.discriminator.requires_grad_(False)  # G's update needs no D weight gradients
        z, fake_labels = self._noise(batch)
        with autocast(self.device, self.precision):
            # D without its DDP wrapper: its weights are identical on every rank and it
            # takes no gradient here, so there is nothing to synchronise.
            fake = self._augmented(self.g_train(z, fake_labels), "g", 0)
            logits = at_least_fp32(self.d_step(fake, fake_labels))
        g_loss = self.loss.g_loss(logits)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.ema.update(self.generator, self.step + 1)
        return torch.stack([d_total / cfg.d_steps, g_loss.detach()])

    def _augmented(self, images: torch.Tensor, step_kind: str, index: int) -> torch.Tensor:
        """``train.augment`` applied to images on their way into D, with a generator seeded by
        the run seed, the step and the call (and the rank: each rank augments its slice)."""
        if self.augment is None:
            return images
        generator = augment_generator(
            self.device, self.recipe.seed, self.step, step_kind, index, self.world.rank
        )
        return self.augment(images, generator)

    def _critic(self, labels: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """D as a function of images alone (for penalties), conditioned on the real labels."""
        return lambda images: at_least_fp32(self.d_train(images, labels))

    # ---- side work -------------------------------------------------------------------------

    def check_finite(self, interval: _Interval) -> torch.Tensor | None:
        """Raise ``Diverged`` at the first non-finite step; return the interval's losses, the
        mean over ranks (every rank sees, logs and judges the same numbers)."""
        if not interval.losses:
            return None
        losses = self.world.mean(torch.stack(interval.losses), self.device).cpu()
        bad = (~torch.isfinite(losses)).any(dim=1).nonzero()
        if len(bad):
            index = int(bad[0])
            raise Diverged(
                interval.first_step + index,
                f"non-finite loss (D {float(losses[index, 0])}, G {float(losses[index, 1])})",
            )
        return losses

    def gammas(self) -> dict[str, float]:
        found = {}
        for net_name, net in (("g", self.generator), ("d", self.discriminator)):
            for name, param in net.named_parameters():
                if name.startswith("attention.") and name.endswith("gamma"):
                    found[f"gamma_{net_name}{name.split('.')[1]}"] = param.detach().item()
        return found

    def _write(self, record: dict[str, Any]) -> None:
        if self.run is not None and self.world.is_main:
            self.run.append_metrics(record)
            self.observer.logged(record)

    def log(self, interval: _Interval) -> None:
        losses = self.check_finite(interval)
        if losses is None:
            return
        steps = len(interval.losses)
        bound = self.recipe.train.max_loss
        means = losses.mean(dim=0)
        self.logs_over_bound = (
            self.logs_over_bound + 1 if bound and float(means.abs().max()) > bound else 0
        )
        self._write(
            {
                "kind": "train",
                "step": self.step,
                "d_loss": float(losses[:, 0].mean()),
                "g_loss": float(losses[:, 1].mean()),
                "lr_g": self.opt_g.param_groups[0]["lr"],
                "lr_d": self.opt_d.param_groups[0]["lr"],
                "img_per_s": steps
                * self.recipe.train.batch_size
                / max(interval.train_seconds, 1e-9),
                "wall_time": self.wall_time,
                **self.gammas(),
            }
        )
        interval.first_step = self.step + 1
        interval.losses.clear()
        interval.train_seconds = 0.0
        if self.logs_over_bound >= DIVERGED_LOGS:
            raise Diverged(
                self.step,
                f"the mean losses (D {float(means[0]):.3g}, G {float(means[1]):.3g}) stayed beyond "
                f"train.max_loss = {bound:g} for {DIVERGED_LOGS} log lines in a row",
            )

    def write_samples(self) -> None:
        if self.run is None or not self.world.is_main:
            return
        seed = self.recipe.seed + SAMPLE_SEED_OFFSET
        count = max(GRID_SIZE, self.recipe.train.structure_samples)
        images = sample_images(self.ema.model, count, seed, self.device, self.precision)
        grid = save_grid(images[:GRID_SIZE], self.run.samples / f"step-{self.step:08d}.png")
        self.observer.image("samples", self.step, grid)
        if not self.run.real_grid.exists() and self.data is not None:  # what samples should be
            save_grid(to_uint8(self.data.first(GRID_SIZE)[0]).cpu(), self.run.real_grid)
        scores = self.source.structural_score(images[: self.recipe.train.structure_samples])
        if scores is not None:
            self._write({"kind": "structure", "step": self.step, **scores})
        self.write_attention_statistics()

    def write_attention_statistics(self) -> None:
        """Where attention looks, per layer of G (EMA, the sample latents) and D (the data's first
        images): a fixed batch, through the explicit maps, in eval mode (nothing changes)."""
        count = self.recipe.logging.attention_images
        layers = {
            "g": attention_layers(self.ema.model, "g"),
            "d": attention_layers(self.discriminator, "d"),
        }
        if not count or not any(layer.has_maps for found in layers.values() for layer in found):
            return
        assert self.data is not None
        z, labels = fixed_inputs(
            count, self.recipe.model.z_dim, self.num_classes, self.recipe.seed + SAMPLE_SEED_OFFSET
        )
        labels = None if labels is None else labels.to(self.device)
        real, real_labels = self.data.first(count)
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            with torch.no_grad(), captured_inputs(layers["g"] + layers["d"]) as inputs:
                fake = self.ema.model(z.to(self.device), labels)
                self.discriminator(real, real_labels if self.num_classes else None)
        finally:
            self.discriminator.train(was_training)
        record = {"kind": "attention", "step": self.step, **self.gammas()}
        record.update(layer_statistics(layers["g"] + layers["d"], inputs, self.partners))
        self._write(record)
        if self.recipe.logging.tensorboard:
            self._attention_figure(to_uint8(fake[:4]).cpu(), layers["g"], inputs)

    def _attention_figure(
        self, images: torch.Tensor, layers: list[Layer], inputs: dict[str, torch.Tensor]
    ) -> None:
        points = auto_queries(images, 3)
        found = [
            LayerMaps(
                layer.name,
                layer.size,
                query_maps(
                    layer, maps_of(layer, inputs[layer.name][:4]).cpu(), points, images.shape[-1]
                ),
            )
            for layer in layers
            if layer.has_maps
        ]
        if found:
            figure = render(images, points, found, f"G attention at step {self.step}")
            self.observer.image("attention/g", self.step, figure_array(figure))

    def evaluate(self, final: bool) -> None:
        assert self.evaluator is not None and self.run is not None
        cfg = self.recipe.eval
        metrics: list[str] = list(cfg.metrics) if final else ["fid"]
        record = self.evaluator.evaluate(
            self.ema.model, self.step, metrics, cfg.num_samples, final, "training"
        )
        if final:
            self.run.record_evaluation(record)
            self.observer.logged(record)
        else:
            self._write(record)
        fid = record.get("fid")
        if fid is not None and (self.best_fid is None or fid < self.best_fid):
            self.best_fid = fid
            ckpt.write_checkpoint({**self.state(), "fid": fid}, self.run.checkpoints / "best.pt")

    def evaluate_best(self) -> None:
        """Full metrics of best.pt (lowest in-training FID), recorded beside the final ones."""
        assert self.run is not None
        best = self.run.checkpoints / "best.pt"
        if self.evaluator is None or not best.is_file():
            return
        state = ckpt.load_checkpoint(best, self.device, self.run.id, self.run.path)
        generator = copy.deepcopy(self.ema.model)
        ckpt.load_generator_weights(generator, state, best, self.run.recipe_path)
        cfg = self.recipe.eval
        record = self.evaluator.evaluate(
            generator, int(state["step"]), list(cfg.metrics), cfg.num_samples, False, "best.pt"
        )
        self.run.record_evaluation(record)
        self.observer.logged(record)

    def save(self) -> None:
        if self.run is None or not self.world.is_main:
            return
        try:
            ckpt.save_checkpoint(
                self.state(), self.run.checkpoints, self.recipe.train.keep_checkpoints
            )
        except ckpt.NonFiniteWeights as exc:
            raise Diverged(self.step, f"non-finite weights ({exc.where})") from None

    # ---- the loop ----------------------------------------------------------------------------

    def prepare(self, checkpoint_name: str | None = None) -> None:
        """Restore the resume point and open the data: validation that changes no file."""
        self.start_checkpoint = self.resume_point(checkpoint_name)
        if self.start_checkpoint is not None:
            self.restore(self.start_checkpoint)
        with self.observer.phase("loading the training images"):
            self.open_data(self.data_position)

    def _status(self, **fields: Any) -> None:
        if self.run is not None and self.world.is_main:
            self.run.update_status(**fields)

    def estimate(self, steps: int) -> str:
        """The run's expected duration on this device (``sagan_cli.train.estimate``)."""
        per_image = estimate.image_flops(
            self.generator, self.discriminator, self.recipe.model.z_dim, self.num_classes > 0
        )
        flops = estimate.iteration_flops(
            per_image, self.recipe.train.batch_size, self.recipe.train.d_steps
        )
        rate = estimate.device_rate(self.device, self.precision) * self.world.size
        return estimate.describe_estimate(flops, steps, rate, self.device.type.upper())

    def run_to_end(self) -> TrainResult:
        assert self.run is not None
        cfg, run = self.recipe.train, self.run
        previous = run.read_status()
        if RunStatus.read(previous) == RunStatus.RUNNING and self.world.is_main:  # we hold the lock
            where = self.start_checkpoint.name if self.start_checkpoint else "step 0"
            self.observer.message(
                f"the previous attempt ({previous.get('pid', '?')} on {previous.get('host', '?')}) "
                f"ended without recording why (killed?); continuing from {where}"
            )
        if self.start_checkpoint is not None and self.world.is_main:
            self.set_aside_newer_than(self.start_checkpoint)
            aside = run.keep_metrics_until(self.step)  # later lines are recomputed identically
            if aside is not None:
                self.observer.message(
                    f"metrics.jsonl had unreadable lines; the original is kept as {aside.name}"
                )
            self.observer.message(f"resuming from {self.start_checkpoint.name} (step {self.step})")
        self._status(
            status=RunStatus.RUNNING,
            started=now(),
            step=self.step,
            steps=cfg.steps,
            device=describe(self.device),
            precision=self.precision,
            world_size=self.world.size,
            threads=torch.get_num_threads(),
            execution=self.execution.describe(),
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
        if self.world.is_main:
            if cfg.steps - self.step >= estimate.MIN_STEPS:
                self.observer.message(self.estimate(cfg.steps - self.step))
            self.observer.started(run, self.step, cfg.steps, describe(self.device))
        interval = self.interval
        try:
            return self._train_to_end(interval)
        finally:
            self.observer.finished()

    def _train_to_end(self, interval: _Interval) -> TrainResult:
        assert self.run is not None
        cfg, run = self.recipe.train, self.run
        try:
            with self.stop.installed():
                if self.step == 0:
                    self.write_samples()  # the untrained generator: every run's baseline
                self.generator.train()
                self.discriminator.train()
                while self.step < cfg.steps:
                    began = time.perf_counter()
                    interval.losses.append(self.advance())
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
                    try:
                        self.observer.advanced(self.step)
                    except KeyboardInterrupt:  # an observer's stop: at a boundary, like a signal
                        self.stop.request(signal.SIGINT)
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
                        self._status(step=self.step)
                    if self.world.any(self.stop.signal is not None, self.device) and not last:
                        return self._interrupted(interval, checkpoint_due)
        except Diverged as stop:
            detail = (
                f"{stop}. The last checkpoint on disk is good (checkpoints are never written "
                f"with non-finite weights); lower the learning rates or change the loss and "
                f"start a new run"
            )
            self._write({"kind": "diverged", "step": stop.step})
            self._status(
                status=RunStatus.DIVERGED,
                diverged_step=stop.step,
                step=stop.step,
                error=detail,
                finished=now(),
            )
            return TrainResult(run, RunStatus.DIVERGED, stop.step, detail)
        except KeyboardInterrupt:  # a second Ctrl-C: the iteration may be half done
            self._status(
                status=RunStatus.INTERRUPTED,
                step=self.step,
                error="interrupted twice",
                finished=now(),
            )
            return TrainResult(
                run,
                RunStatus.INTERRUPTED,
                self.step,
                "stopped at once (second Ctrl-C) without saving; re-run the same command to "
                "resume from the last checkpoint",
                signal.SIGINT,
            )
        if self.evaluator and self.recipe.eval.final and self.world.is_main:
            self.evaluate(final=True)
            self.evaluate_best()
        self._status(
            status=RunStatus.DONE,
            step=self.step,
            finished=now(),
            wall_time_s=round(self.wall_time, 3),
        )
        return TrainResult(run, RunStatus.DONE, self.step)

    def _interrupted(self, interval: _Interval, saved_already: bool) -> TrainResult:
        """Stop at this iteration boundary: save it (unless just saved) and say how to resume."""
        assert self.run is not None
        signum = self.stop.signal or signal.SIGINT
        name = signal.Signals(signum).name
        try:
            self.check_finite(interval)
            if not saved_already:
                self.save()
            saved = "saved a checkpoint of it"
        except Diverged:
            saved = "the losses were not finite, so no checkpoint was saved"
        self._status(
            status=RunStatus.INTERRUPTED, step=self.step, error=f"stopped by {name}", finished=now()
        )
        return TrainResult(
            self.run,
            RunStatus.INTERRUPTED,
            self.step,
            f"stopped by {name}; {saved}; re-run the same command to resume",
            signum,
        )


def _record_failure(run: RunDir, world: World, error: str) -> None:
    """Status ``failed`` (when this rank writes and the disk still takes it)."""
    if world.is_main:
        with contextlib.suppress(OSError):
            run.update_status(status=RunStatus.FAILED, error=error, finished=now())


def write_failure(run: RunDir, exc: OSError) -> ResultsError:
    """One paragraph for a write that failed mid-run: where, why, and what was kept."""
    kept = ckpt.list_checkpoints(run.checkpoints)
    last = (
        f"the last good checkpoint, {kept[-1].name}, is kept"
        if kept
        else "no checkpoint was written yet"
    )
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return ResultsError(
        f"Writing to {run.path} failed: {exc.strerror or exc}"
        + (" (the disk is full or a file-size limit was reached)" if full else "")
        + f"; {last} and no partial file was left. "
        + ("Free space or raise the limit (ulimit -f)" if full else "Make the folder writable")
        + ", then re-run the same command to resume."
    )


def crash_error(
    exc: Exception, run: RunDir, step: int | None, doing: str, world: World = SINGLE
) -> SaganError:
    """One paragraph for an exception that is not the user's input.

    A plugin's module on the stack is named (exit 2, like every plugin error); running
    out of memory says what to lower; a failed collective of a data-parallel run says
    a rank was lost; anything else is a bug: exit 1, with the traceback in the run's
    error.log.
    """
    at = f" at step {step}" if step is not None else ""
    kept = ckpt.list_checkpoints(run.checkpoints)
    resume = f"from {kept[-1].name}" if kept else "from the start"
    if world.distributed and _lost_a_rank(exc):
        return RunFailed(
            f"Rank {world.rank} of {world.size} lost the other ranks while {doing}{at} "
            f"({describe_exception(exc, 120)}): a rank died or its node failed. The run is "
            f"marked failed; re-run the same command to resume {resume}."
        )
    origin = origin_in_traceback(exc)
    if origin is not None:
        return attributed(
            origin.entry,
            origin.key,
            f"running {origin.where()} while {doing}{at}",
            describe_exception(exc),
        )
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return SaganError(
            f"{run.path} ran out of memory while {doing}{at} ({describe_exception(exc)}). Lower "
            f"train.batch_size or the widths (model.g_channels, model.d_channels), or free the "
            f"device; then re-run the same command to resume from the last checkpoint."
        )
    return RunFailed(
        f"Training {run.path} failed while {doing}{at}: {describe_exception(exc)}. This is not a "
        f"problem in your recipe: the traceback is in {run.path / 'error.log'} (please include "
        f"it when reporting a bug). The run is marked failed; re-run the same command to "
        f"resume {resume}."
    )


def _lost_a_rank(exc: BaseException) -> bool:
    """A collective failed because a peer went away (gloo and NCCL say it in different ways)."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        mark in text for mark in ("gloo", "nccl", "connection closed by peer", "connection reset")
    )


def _logged_crash(
    exc: Exception, run: RunDir, world: World, step: int | None, doing: str
) -> SaganError:
    """``crash_error`` with the traceback kept in the run's error.log (when this rank writes)."""
    if world.is_main:
        with contextlib.suppress(OSError):
            atomic_write_text(run.path / "error.log", traceback.format_exc())
    return crash_error(exc, run, step, doing, world)


def train_run(
    recipe: Recipe,
    run: RunDir,
    device: torch.device,
    registry: Registry,
    observer: Observer | None = None,
    evaluator_factory: Callable[[Recipe, Any], Evaluator] | None = None,
    checkpoint_name: str | None = None,
    retry_diverged: bool = False,
    world: World = SINGLE,
    record_preflight_errors: bool = False,
) -> TrainResult:
    """Train (or resume, or skip if done) the run.

    Problems found before training starts (data, checkpoint, plugins) raise
    without touching the folder, unless ``record_preflight_errors`` (an ablation
    records them as the run's ``failed`` status); failures after it started are
    recorded in status.json (and error.log for bugs). Only the lock holder writes.
    """
    observer = observer or Observer()
    board = None
    if world.is_main:
        prepare_run(recipe, run)
    world.barrier()
    with (
        run_lock(run) if world.is_main else contextlib.nullcontext(),
        default_dtype(recipe.train.precision),
    ):
        status = run.read_status()
        if RunStatus.read(status) == RunStatus.DONE and checkpoint_name is None:
            return TrainResult(
                run, RunStatus.DONE, status.get("step", recipe.train.steps), "already complete"
            )
        if (
            RunStatus.read(status) == RunStatus.DIVERGED
            and not retry_diverged
            and checkpoint_name is None
        ):
            return TrainResult(
                run,
                RunStatus.DIVERGED,
                status.get("diverged_step", 0),
                f"{status.get('error')} (not resumed)",
            )
        if recipe.logging.tensorboard and world.is_main:
            from sagan_cli.train.tensorboard import TensorBoardLog

            board = TensorBoardLog(run.path / "tensorboard")
            observer = Observers(observer, board)
        previous = torch.are_deterministic_algorithms_enabled()
        if recipe.train.deterministic and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # CUDA's fused attention backward has no deterministic kernel: warn there instead of
        # failing. Bit-exact resume is guaranteed (and tested) on CPU.
        torch.use_deterministic_algorithms(
            recipe.train.deterministic, warn_only=device.type == "cuda"
        )
        session: TrainingSession | None = None
        try:
            try:
                session = TrainingSession(recipe, device, registry, observer, run=run, world=world)
                session.prepare(checkpoint_name)
                if evaluator_factory is not None and (recipe.eval.every or recipe.eval.final):
                    with observer.phase("preparing the evaluation (reference statistics)"):
                        session.evaluator = evaluator_factory(recipe, session.source)
            except Exception as exc:  # ours (SaganError) as they are; anything else explained
                error = (
                    exc
                    if isinstance(exc, SaganError)
                    else _logged_crash(exc, run, world, None, "setting up the run")
                )
                if world.is_main and record_preflight_errors:
                    with contextlib.suppress(OSError):
                        run.update_status(status=RunStatus.FAILED, error=str(error), finished=now())
                if error is exc:
                    raise
                raise error from exc
            try:
                return session.run_to_end()
            except OSError as exc:  # disk full, folder gone or read-only
                error = write_failure(run, exc)
                _record_failure(run, world, str(error))
                raise error from None
            except SaganError as exc:
                _record_failure(run, world, str(exc))
                raise
            except Exception as exc:
                error = _logged_crash(exc, run, world, session.step, "training")
                _record_failure(run, world, str(error))
                raise error from exc
        finally:
            torch.use_deterministic_algorithms(previous)
            if board is not None:
                board.close()
