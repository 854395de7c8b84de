"""``slurm``: one SLURM job array per grid through submitit.

Each array element trains one run (``--nproc N``: N tasks on one node, one GPU
each, joined by torch.distributed). SLURM is asked to send SIGTERM
``signal_delay_s`` seconds before the time limit, so a run checkpoints and stops
cleanly; re-running the same ``sagan ablate`` resumes it. ``cluster = "local"``
runs the same array as local processes (submitit's local executor), to try a
grid on a machine without SLURM.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path
from typing import Any

from sagan_cli.api import LaunchContext, Launcher, RunTask
from sagan_cli.errors import PluginError
from sagan_cli.launchers import missing_extra
from sagan_cli.launchers.params import SlurmParams


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise missing_extra("submitit", "slurm", "slurm") from None
    return submitit


def run_array_element(execute: Any, task: RunTask) -> str:
    """What one array element runs: the task itself, or one rank of a multi-process run.

    With ``task.nproc > 1`` SLURM starts that many tasks for the element; each exports
    the rendezvous submitit derives from SLURM's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, ...) and runs ``sagan train --resume`` as one rank, as torchrun would.
    """
    if task.nproc == 1:
        return str(execute(task))
    environment = _submitit().helpers.TorchDistributedEnvironment()
    environment.export(set_cuda_visible_devices=False)
    rank = subprocess.run(list(dataclasses.replace(task, nproc=1).argv), check=False)
    if rank.returncode != 0:  # the run's folder says why; the job is marked failed
        raise RuntimeError(f"rank {environment.rank} exited with code {rank.returncode}")
    return "done"


class SlurmLauncher(Launcher):
    supports_nproc = True

    def __init__(self, params: SlurmParams) -> None:
        self.params = params
        self.submitit = _submitit()

    def check(self) -> None:
        import shutil

        if self.params.cluster == "slurm" and shutil.which("sbatch") is None:
            raise PluginError(
                "--launcher slurm: `sbatch` is not on this machine's PATH, so jobs cannot be "
                "submitted. Run sagan ablate on a SLURM login node, or try the grid locally "
                "with --set launch.cluster=local."
            )

    def launch(self, context: LaunchContext) -> None:
        p = self.params
        folder = Path(p.folder or Path(context.tasks[0].run_dir).parent.parent / "slurm")
        executor = self.submitit.AutoExecutor(folder=str(folder), cluster=p.cluster)
        nproc = max(t.nproc for t in context.tasks)
        gpus = p.gpus_per_node if p.gpus_per_node is not None else context.gpus_per_run
        parameters: dict[str, Any] = {
            "timeout_min": p.time_min,
            "tasks_per_node": nproc,
            "nodes": 1,
            "cpus_per_task": p.cpus_per_task or context.cpus_per_run,
        }
        if p.cluster == "slurm":
            parameters.update(
                slurm_array_parallelism=p.array_parallelism,
                slurm_signal_delay_s=p.signal_delay_s,
                gpus_per_node=gpus,
            )
            for key, value in (
                ("slurm_partition", p.partition),
                ("mem_gb", p.mem_gb),
                ("slurm_account", p.account),
                ("slurm_qos", p.qos),
            ):
                if value is not None:
                    parameters[key] = value
        executor.update_parameters(**parameters)
        tasks = list(context.tasks)
        jobs = executor.map_array(run_array_element, [context.execute] * len(tasks), tasks)
        context.report(
            f"slurm: submitted job array {jobs[0].job_id.split('_')[0]} with {len(jobs)} run(s) "
            f"({p.cluster} executor); logs in {folder}"
        )
        try:
            while not all(job.done() for job in jobs):
                context.poll()
                time.sleep(1.0)
        except KeyboardInterrupt:
            context.report(
                "slurm: stopped waiting; the submitted jobs keep running. Re-run the same "
                "command later to collect them (finished runs are skipped)."
            )
            raise
        for job, task in zip(jobs, tasks, strict=True):
            try:
                job.results()  # one result per SLURM task (one per rank)
            except Exception as exc:  # the job itself failed; its run folder says why
                context.report(
                    f"{task.label}: SLURM job {job.job_id} failed ({type(exc).__name__})"
                )
        context.poll()
