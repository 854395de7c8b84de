"""Parameter models of the built-in launchers (pydantic only: registering them stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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
    connect_timeout_s: float = Field(5.0, gt=0, description="how long to wait for the address")


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
    signal: Literal["USR2", "USR1", "TERM"] = Field(
        "USR2",
        description="what SLURM sends signal_delay_s before the time limit (sbatch --signal); "
        "runs checkpoint and stop on it",
    )
    signal_delay_s: int = Field(
        120, ge=0, description="how long before the time limit launch.signal is sent"
    )
    requeue: bool = Field(
        True,
        description="after the time-limit warning, requeue the element: the run resumes from "
        "its checkpoint in a new allocation (else re-run the command to resume it)",
    )
    folder: str | None = Field(None, description="submitit logs (default: <experiment>/slurm/)")

    @model_validator(mode="after")
    def _warning_before_the_limit(self) -> SlurmParams:
        if self.signal_delay_s >= self.time_min * 60:
            raise ValueError(
                f"signal_delay_s = {self.signal_delay_s} is not shorter than time_min = "
                f"{self.time_min} ({self.time_min * 60} s): the warning would come before the "
                f"job starts. Give a longer time_min or a shorter signal_delay_s"
            )
        return self
