"""Data parallelism: who this process is among the ranks of one run, and what they agree on.

A single process is a world of one. Under ``torchrun`` (or ``sagan train
--nproc N``, which starts torchrun) every rank builds the same networks from the
same seed; G and D are wrapped in DistributedDataParallel; each rank trains on
its slice of the same global batch and the same global noise draw; G's batch
norm computes its statistics over the global batch; rank 0 alone writes files.
So N ranks compute what one process would, and a checkpoint resumes under any
number of ranks.

Collectives time out after ``SAGAN_DIST_TIMEOUT_S`` seconds (default 1800: rank
0 alone runs evaluations while the others wait), so a rank that hangs cannot
hang the run forever; torchrun stops the other ranks when one dies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from sagan_cli.device import select_device
from sagan_cli.errors import SaganError

TIMEOUT_ENV = "SAGAN_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is true on any (so all ranks stop at one step)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The mean of ``tensor`` over ranks (the same values on every rank)."""
        if not self.distributed:
            return tensor
        dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32  # fp64 stays
        total = tensor.to(device, dtype, copy=True)
        dist.all_reduce(total)
        return total / self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE = World()


def collective_timeout_s() -> float:
    """``SAGAN_DIST_TIMEOUT_S`` (default 1800), checked: a bad value is the user's to fix."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return 1800.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 1 <= seconds <= 7 * 24 * 3600:
        raise SaganError(
            f"{TIMEOUT_ENV}={text!r} is not a number of seconds between 1 and 604800 (a week): "
            f"it bounds how long a rank waits for the others. Set e.g. {TIMEOUT_ENV}=1800, or "
            f"unset it for that default."
        )
    return seconds


def join_process_group(device: str) -> World:
    """Join the process group torchrun (or SLURM through submitit) describes in the environment."""
    world = World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    chosen = select_device(device)
    timeout = collective_timeout_s()
    if chosen.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                backend="nccl" if chosen.type == "cuda" else "gloo",
                timeout=timedelta(seconds=timeout),
            )
        except (RuntimeError, ValueError) as exc:
            raise SaganError(
                f"Rank {world.rank} of {world.size} could not join the process group at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} ({exc}). "
                f"Check that every node can reach that address and port."
            ) from None
    return world


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank's own GPU (its local rank); CPU ranks share the CPU."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch across all ranks.

    Two-pass (mean, then variance) with differentiable all-reduces, so gradients
    match a single process on the whole batch; works with gloo (CPU) and NCCL.
    Its state dict is nn.BatchNorm2d's, so checkpoints move between world sizes.
    """

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        local = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=x.dtype)
        count = all_reduce(local)  # elements per channel over the global batch
        mean = all_reduce(x.sum(dim=(0, 2, 3))) / count
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.square().sum(dim=(0, 2, 3))) / count
        with torch.no_grad():
            assert self.running_mean is not None and self.running_var is not None
            momentum = 0.1 if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.detach(), momentum)
            unbiased = var.detach() * count / (count - 1).clamp(min=1)
            self.running_var.lerp_(unbiased, momentum)
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def synchronise_batch_norm(module: nn.Module) -> int:
    """Replace every BatchNorm2d inside ``module`` by a SyncedBatchNorm2d; returns how many."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncedBatchNorm2d):
            synced = SyncedBatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            ).to(next(iter(child.buffers())).device)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
            replaced += 1
        else:
            replaced += synchronise_batch_norm(child)
    return replaced
