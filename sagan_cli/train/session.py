"""One training run in memory: build, step, state.

One iteration = ``d_steps`` discriminator updates on real and generated batches
(one D forward over both, concatenated), then one generator update, then the
EMA update. ``state()`` holds everything that determines the rest of the run
(weights, both optimisers, EMA, every RNG state, the data position, the losses
not yet logged), so a resumed run continues bit for bit in deterministic mode.
Side work (logging, samples, evaluation, checkpoints) is the loop's callbacks'.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    num_classes_for,
    partners_by_size,
    plugin_for,
    verify_networks,
)
from sagan_cli.device import at_least_fp32, autocast, available_memory, convert_memory_format
from sagan_cli.errors import CheckpointError
from sagan_cli.execution import ExecutionPlan
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe
from sagan_cli.train.data import BatchStream
from sagan_cli.train.distributed import SINGLE, World, synchronise_batch_norm
from sagan_cli.train.ema import EMA
from sagan_cli.train.observer import Observer


class Diverged(Exception):
    """Non-finite (or unbounded) losses or weights at ``step``."""

    def __init__(self, step: int, why: str) -> None:
        super().__init__(why)
        self.step = step


def resident_limit(device: torch.device) -> int:
    """Data up to a quarter of free device memory is kept resident as uint8."""
    return available_memory(device) // 4


@dataclass
class PendingLosses:
    """Per-step losses kept on the device until the next log line (no sync per step)."""

    first_step: int = 1
    losses: list[torch.Tensor] = field(default_factory=list)
    train_seconds: float = 0.0

    def clear(self, next_step: int) -> None:
        self.first_step = next_step
        self.losses.clear()
        self.train_seconds = 0.0


class TrainingSession:
    """Networks, optimisers, EMA, data and RNG of one run; ``advance()`` is one iteration.

    ``source``: train on this data source instead of the recipe's (benchmarks); the
    recipe's is built and checked otherwise. ``observer`` hears the set-up phases.
    """

    def __init__(
        self,
        recipe: Recipe,
        plan: ExecutionPlan,
        registry: Registry,
        observer: Observer | None = None,
        source: DataSource | None = None,
        world: World = SINGLE,
    ) -> None:
        self.recipe, self.plan, self.registry, self.world = recipe, plan, registry, world
        observer = observer or Observer()
        cfg = recipe.train
        self.source = source or build_data_source(recipe, registry)
        if source is None:
            with observer.phase("checking the data"):
                check_data(self.source, registry)
        self.num_classes = num_classes_for(recipe, self.source)
        torch.manual_seed(recipe.seed)  # weight initialisation
        self.partners = partners_by_size(recipe, registry, self.source)
        with observer.phase("building the networks"):
            generator, discriminator = build_networks(
                recipe, self.num_classes, registry, self.source
            )
        self.loss = build_loss(recipe, registry)
        loss_entry, _ = plugin_for(recipe, "loss", registry)
        # a fresh loss object for the dry run: plugins may count their calls
        trial_loss = (build_loss(recipe, registry), loss_entry)
        # the dry run sees the networks as training will: on the device, in its layout and
        # precision, so a plugin that breaks there fails here with a paragraph
        self.generator = convert_memory_format(generator.to(self.device), plan.memory_format)
        self.discriminator = convert_memory_format(
            discriminator.to(self.device), plan.memory_format
        )
        with observer.phase("checking the networks on a tiny batch"):
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
            self.augment.to(self.device)
            check_augment(self.augment, recipe.data.resolution, self.device)
        self.ema = EMA(self.generator, cfg.ema_decay, cfg.ema_start)
        fused = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
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
        self.g_step = torch.compile(self.generator) if plan.compile else self.generator
        self.d_step = torch.compile(self.discriminator) if plan.compile else self.discriminator
        self.step = 0
        self.data_position = 0
        self.best_fid: float | None = None
        self.wall_time = 0.0
        self.data: BatchStream | None = None
        self.pending = PendingLosses()
        self.logs_over_bound = 0  # consecutive log lines with a loss beyond train.max_loss
        self.collapsed_checks = 0  # consecutive checks where every sample was the same image

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def precision(self) -> str:
        return self.plan.precision

    def _training_wrappers(self) -> tuple[Any, Any]:
        """The modules whose backward updates weights: DDP-wrapped when data-parallel."""
        if not self.world.distributed:
            return self.generator, self.discriminator
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.generator, device_ids=ids), DDP(self.discriminator, device_ids=ids)

    # ---- state -----------------------------------------------------------------------------

    def state(self, run_id: str = "") -> dict[str, Any]:
        pending = self.pending.losses
        return {
            "run_id": run_id,
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
            "interval_losses": torch.stack(pending).cpu() if pending else torch.zeros(0, 2),
            "interval_seconds": self.pending.train_seconds,
            "logs_over_bound": self.logs_over_bound,
            "collapsed_checks": self.collapsed_checks,
        }

    def restore(self, path: Path, run_id: str, run_path: Path) -> None:
        """Continue from the checkpoint at ``path`` (checked to belong to run ``run_id``)."""
        state = ckpt.load_checkpoint(path, self.device, run_id, run_path)
        try:
            self.generator.load_state_dict(state["generator"])
            self.discriminator.load_state_dict(state["discriminator"])
            self.ema.model.load_state_dict(state["ema"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"Checkpoint {path} does not fit the networks of {run_path / 'recipe.toml'} "
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
        self.collapsed_checks = int(state.get("collapsed_checks", 0))
        pending = state.get("interval_losses", torch.zeros(0, 2)).to(self.device)
        self.pending = PendingLosses(
            self.step - len(pending) + 1, list(pending), float(state.get("interval_seconds", 0.0))
        )

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

    # ---- what the loop reads ---------------------------------------------------------------

    def pending_losses(self) -> torch.Tensor | None:
        """The losses not yet logged, the mean over ranks (every rank sees, logs and judges
        the same numbers); ``Diverged`` at the first non-finite step."""
        pending = self.pending
        if not pending.losses:
            return None
        losses = self.world.mean(torch.stack(pending.losses), self.device).cpu()
        bad = (~torch.isfinite(losses)).any(dim=1).nonzero()
        if len(bad):
            index = int(bad[0])
            raise Diverged(
                pending.first_step + index,
                f"non-finite loss (D {float(losses[index, 0])}, G {float(losses[index, 1])})",
            )
        return losses

    def gammas(self) -> dict[str, float]:
        """Each attention layer's gamma (``gamma_g16``...): how much of the block is used."""
        found = {}
        for net_name, net in (("g", self.generator), ("d", self.discriminator)):
            for name, param in net.named_parameters():
                if name.startswith("attention.") and name.endswith("gamma"):
                    found[f"gamma_{net_name}{name.split('.')[1]}"] = param.detach().item()
        return found
