"""Parameter models of the built-in launchers (pydantic only: registering them stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sagan_cli.api import PluginParams


class RayParams(PluginParams):
    address: str | None = Field(
        None,
        description="'auto' (the cluster this machine belongs to), host:port or ray://host:port; "
        "none: start a local Ray instance",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local instance (default: all)")
    cpus_per_run: float | None = Field(
        None, gt=0, description="CPUs a run reserves (default: its threads)"
    )
    gpus_per_run: float | None = Field(
        None, ge=0, description="GPUs a run reserves (default: 1 per process on CUDA, else 0)"
    )
    connect_timeout_s: float = Field(20.0, gt=0, description="how long to wait for the address")


class SlurmParams(PluginParams):
    cluster: Literal["slurm", "local", "debug"] = Field(
        "slurm", description="submitit executor: slurm, or local/debug to try a grid without SLURM"
    )
    partition: str | None = Field(None, description="SLURM partition (--partition)")
    time_min: int = Field(24 * 60, ge=1, description="wall-time limit per run in minutes")
    gpus_per_node: int | None = Field(
        None, ge=0, description="GPUs per run (default: --nproc on CUDA, else 0)"
    )
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per process")
    mem_gb: int | None = Field(None, ge=1, description="memory per run in GB")
    account: str | None = Field(None, description="SLURM account (--account)")
    qos: str | None = Field(None, description="SLURM quality of service (--qos)")
    array_parallelism: int = Field(64, ge=1, description="runs of the array at once")
    signal_delay_s: int = Field(
        120, ge=0, description="SIGTERM this long before the time limit: runs checkpoint and stop"
    )
    folder: str | None = Field(None, description="submitit logs (default: <experiment>/slurm/)")
