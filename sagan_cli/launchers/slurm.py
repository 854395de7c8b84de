"""``slurm``: one SLURM job array per grid through submitit.

Each array element trains one run (``--nproc N``: N tasks on one node, one GPU
each, joined by torch.distributed). SLURM is asked to send ``launch.signal``
(USR2 by default) ``signal_delay_s`` seconds before the time limit; the run
finishes its iteration and checkpoints on it (SIGTERM and the other user signal
too), and with ``launch.requeue`` the element requeues itself, so the run goes on
from that checkpoint in a new allocation. The submitted arrays are recorded in
``<experiment>/slurm/jobs.json``: re-running the command while they are pending
or running attaches to them instead of submitting again, ``--detach`` returns
after submitting, and ``sagan status`` shows each element's state.
``cluster = "local"`` runs the same array as local processes (submitit's local
executor), to try a grid on a machine without SLURM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sagan_cli.api import LaunchContext, Launcher, RunTask
from sagan_cli.errors import PluginError
from sagan_cli.extras import optional
from sagan_cli.fileio import atomic_write_json
from sagan_cli.launchers.params import SlurmParams
from sagan_cli.train.callbacks.allocation import ALLOCATION_END, WARNING_DELAY

RECORD = "jobs.json"
ACTIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "RESIZING",
    "STAGE_OUT",
    "SIGNALING",
}
POLL_S = 2.0  # run folders are read this often while waiting
QUERY_S = 5.0  # the scheduler is asked this often (squeue, sacct)
COMMAND_TIMEOUT_S = 5.0  # a controller that does not answer in this time is down


def _submitit() -> Any:
    return optional("submitit", "submitit", "slurm", "--launcher slurm", "use --launcher local")


@dataclass(frozen=True)
class ElementSettings:
    """What an array element needs to know beyond its task (picklable)."""

    warning_signal: str  # "USR2": the time-limit warning launch.signal names
    requeue: bool
    warning_delay_s: float = 0.0  # how long before the time limit the warning comes


def run_array_element(execute: Any, task: RunTask, settings: ElementSettings) -> str:
    """What one array element runs: the task itself, or one rank of a multi-process run.

    With ``task.nproc > 1`` SLURM starts that many tasks for the element; each exports
    the rendezvous submitit derives from SLURM's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, ...) and runs ``sagan train --resume`` as one rank, as torchrun would.
    A run stopped by the time-limit warning is requeued (rank 0 asks SLURM) when
    ``settings.requeue``: the new allocation resumes it from the checkpoint just saved.
    """
    from sagan_cli.outcomes import RunStatus, stop_signal
    from sagan_cli.results import RunDir
    from sagan_cli.signals import hold_warning_signals

    hold_warning_signals()  # never submitit's handler, which raises inside the training loop
    job = os.environ.get("SLURM_JOB_ID")
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    # an array's first element shares its job id with the array: name the element itself
    element = f"{array}_{index}" if array and index else job
    end = _allocation_end(element) if element else None
    if end is not None:  # the run warns when its allocation is too short for its checkpoints
        os.environ[ALLOCATION_END] = str(end)
        os.environ[WARNING_DELAY] = str(settings.warning_delay_s)
    if task.nproc == 1:
        status = str(execute(task))
        rank = 0
    else:
        environment = _submitit().helpers.TorchDistributedEnvironment()
        environment.export(set_cuda_visible_devices=False)
        rank = environment.rank
        completed = subprocess.run(list(dataclasses.replace(task, nproc=1).argv), check=False)
        status = RunDir(Path(task.run_dir)).status
        if completed.returncode != 0 and status.open:
            raise RuntimeError(f"rank {rank} exited with code {completed.returncode}")
    run = RunDir(Path(task.run_dir))
    warned = int(getattr(signal, f"SIG{settings.warning_signal}"))
    stopped_by = stop_signal(str(run.read_status().get("error") or ""))
    if (
        status == RunStatus.INTERRUPTED
        and settings.requeue
        and stopped_by == warned
        and rank == 0
        and job
    ):
        requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if requeued.returncode == 0:
            run.update_status(
                error=f"stopped by SIG{settings.warning_signal}; requeued as job {job}"
            )
    return status


def _scheduler(*command: str) -> subprocess.CompletedProcess | None:
    """A SLURM client command, or None when it is missing or the controller did not answer."""
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def element_states(array_ids: list[str]) -> dict[str, str]:
    """``"123_4" -> state`` for every element of the arrays: what the controller knows from
    squeue (pending elements expanded; ended ones for MinJobAge, 5 minutes by default), the
    rest from sacct (the latest attempt of a requeued one). sacct keeps no record of an
    element cancelled while it waited after a requeue: its last one stays REQUEUED."""
    if not array_ids:
        return {}
    ids = ",".join(array_ids)
    states: dict[str, str] = {}
    ended = _scheduler("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ids)
    if ended is not None and ended.returncode == 0:
        for line in ended.stdout.splitlines():
            job, _, state = line.partition("|")
            if "[" not in job:  # sacct compresses pending elements as 123_[1-3]
                said = state.split()[0] if state.strip() else "UNKNOWN"
                # not in the queue (squeue, below, says otherwise) but REQUEUED: it was
                # cancelled while it waited; only a cancel takes a pending job out
                states[job.strip()] = "CANCELLED" if said == "REQUEUED" else said
    live = _scheduler("squeue", "-h", "-r", "-t", "all", "-j", ids, "-o", "%i|%T")
    if live is not None and live.returncode == 0:
        for line in live.stdout.splitlines():
            job, _, state = line.partition("|")
            states[job.strip()] = state.strip()
    return states


def _allocation_end(job: str) -> float | None:
    """When job (or array element) ``job``'s allocation ends, in seconds since the epoch, as
    squeue says; None when it has no limit or cannot be asked."""
    said = _scheduler("squeue", "-h", "-j", job, "-o", "%e")
    lines = said.stdout.split() if said is not None and said.returncode == 0 else []
    text = lines[0] if len(lines) == 1 else ""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:  # "N/A", "Unknown", nothing
        return None


def _ended(elements: dict[str, str], states: dict[str, str]) -> dict[str, str]:
    """Run folder -> why its element ended without completing, in the scheduler's words."""
    ended = {}
    for run_dir, element in elements.items():
        state = states.get(element, "UNKNOWN")
        if state in ("COMPLETED", "UNKNOWN") or state in ACTIVE:
            continue
        said = f"SLURM job {element} ended {state}"
        ended[run_dir] = f"cancelled (scancel): {said}" if state == "CANCELLED" else said
    return ended


class JobRecord:
    """The arrays submitted for one experiment: ``<experiment>/slurm/jobs.json``."""

    def __init__(self, experiment_dir: str) -> None:
        self.path = Path(experiment_dir) / "slurm" / RECORD

    def read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return list(data["submissions"])
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def add(self, jobs: dict[str, str]) -> None:
        """Record one submission: run folder -> its job id (``123_4``; ``123`` alone when
        SLURM made a one-run array a plain job)."""
        submissions = self.read()
        submissions.append(
            {
                "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "jobs": jobs,
            }
        )
        atomic_write_json(self.path, {"submissions": submissions})

    def elements(self) -> dict[str, str]:
        """Run folder -> the job id of its latest submission."""
        found: dict[str, str] = {}
        for submission in self.read():
            found.update(submission.get("jobs", {}))
        return found


def explain_refusal(text: str, params: SlurmParams) -> str:
    """One paragraph for sbatch's refusal (its 'sbatch: error:' lines)."""
    said = (
        " ".join(
            line.split("error:", 1)[1].strip() for line in text.splitlines() if "error:" in line
        )
        or " ".join(text.split())[:300]
    )
    lowered = said.lower()
    if "account" in lowered:
        fix = (
            f"launch.account = {params.account!r} (with partition {params.partition!r}) is not "
            f"an account you may use: `sacctmgr show assoc user=$USER` lists yours"
        )
    elif "qos" in lowered:
        fix = (
            f"launch.qos = {params.qos!r} is not a quality of service you may use: `sacctmgr "
            f"show qos` lists them"
        )
    elif "partition" in lowered:
        fix = (
            f"launch.partition = {params.partition!r} is not a partition this cluster offers "
            f"to you: `sinfo -s` lists them; set --set launch.partition=NAME"
        )
    elif "contact" in lowered or "connect" in lowered or "controller" in lowered:
        fix = "the SLURM controller does not answer: check that slurmctld runs (`scontrol ping`)"
    else:
        fix = "fix the job parameters (launch.*) it names"
    return (
        f"SLURM refused the job array: {said.rstrip('.')}; {fix}. Nothing "
        f"was submitted and the runs are still queued; re-run the same command once it is fixed."
    )


class SlurmLauncher(Launcher):
    supports_nproc = True
    supports_detach = True

    def __init__(self, params: SlurmParams) -> None:
        self.params = params
        self.submitit = _submitit()

    def check(self) -> None:
        if self.params.cluster != "slurm":
            return
        if shutil.which("sbatch") is None:
            raise PluginError(
                "--launcher slurm: `sbatch` is not on this machine's PATH, so jobs cannot be "
                "submitted. Run sagan ablate on a SLURM login node, or try the grid locally "
                "with --set launch.cluster=local."
            )
        ping = _scheduler("scontrol", "ping")
        if ping is None or ping.returncode != 0 or "DOWN" in ping.stdout:
            said = " ".join(((ping.stdout + ping.stderr) if ping else "no answer").split())
            raise PluginError(
                f"The SLURM controller does not answer (`scontrol ping`: {said[:200] or 'no answer'}"
                f", waited up to {COMMAND_TIMEOUT_S:g} s). Check that slurmctld runs and that "
                f"SLURM_CONF points at its configuration; nothing was submitted."
            )
        if self.params.partition is not None:
            listed = _scheduler("sinfo", "-h", "-o", "%R")
            partitions = (
                sorted(set(listed.stdout.split())) if listed and listed.returncode == 0 else []
            )
            if partitions and self.params.partition not in partitions:
                raise PluginError(
                    f"launch.partition = '{self.params.partition}' is not a partition of this "
                    f"cluster; it has {', '.join(partitions)}. Nothing was submitted."
                )

    def launch(self, context: LaunchContext) -> None:
        p = self.params
        folder = Path(p.folder or Path(context.experiment_dir) / "slurm")
        record = JobRecord(context.experiment_dir)
        by_run = {task.run_dir: task for task in context.tasks}
        recorded = record.elements()
        live = element_states(sorted({e.split("_")[0] for e in recorded.values()}))
        attached = {
            run_dir: element
            for run_dir, element in recorded.items()
            if run_dir in by_run and live.get(element) in ACTIVE and p.cluster == "slurm"
        }
        if attached:
            arrays = sorted({e.split("_")[0] for e in attached.values()})
            context.report(
                f"slurm: attached to {len(attached)} run(s) already submitted (job array "
                f"{', '.join(arrays)}); nothing is submitted twice"
            )
        to_submit = [task for task in context.tasks if task.run_dir not in attached]
        elements = dict(attached)
        local_jobs: list[Any] = []
        if to_submit:
            jobs = self._submit(context, folder, to_submit)
            array = str(jobs[0].job_id).split("_")[0]
            if p.cluster == "slurm":
                submitted = {t.run_dir: str(j.job_id) for t, j in zip(to_submit, jobs, strict=True)}
                record.add(submitted)
                elements.update(submitted)
            else:
                local_jobs = jobs
            context.report(
                f"slurm: submitted job array {array} 'sagan:{context.experiment}' with "
                f"{len(to_submit)} run(s) ({p.cluster} executor); logs in {folder}"
            )
        if context.detach:
            return
        try:
            if local_jobs:
                while not all(job.done() for job in local_jobs):
                    context.poll()
                    time.sleep(1.0)
                for job, task in zip(local_jobs, to_submit, strict=True):
                    try:
                        job.results()
                    except Exception as exc:  # the job itself failed; its run folder says why
                        context.lost(task, f"its job {job.job_id} failed ({type(exc).__name__})")
            else:
                self._wait(context, elements, by_run)
        except KeyboardInterrupt:
            context.report(
                "slurm: stopped waiting; the submitted jobs keep running. Re-run the same "
                "command to attach to them again, or `sagan status` to see them."
            )
            raise
        context.poll()

    def _submit(self, context: LaunchContext, folder: Path, tasks: list[RunTask]) -> list[Any]:
        p = self.params
        existed = folder.exists()
        before = set(folder.iterdir()) if existed else set()
        executor = self.submitit.AutoExecutor(folder=str(folder), cluster=p.cluster)
        nproc = max(t.nproc for t in tasks)
        gpus = p.gpus_per_node if p.gpus_per_node is not None else context.gpus_per_run
        parameters: dict[str, Any] = {
            "timeout_min": p.time_min,
            "tasks_per_node": nproc,
            "nodes": 1,
            "cpus_per_task": p.cpus_per_task or context.cpus_per_run,
            "name": f"sagan:{context.experiment}",
        }
        if p.cluster == "slurm":
            additional: dict[str, Any] = {"signal": f"{p.signal}@{p.signal_delay_s}"}
            if p.requeue:
                additional["requeue"] = True
            parameters.update(
                slurm_array_parallelism=p.array_parallelism,
                slurm_signal_delay_s=p.signal_delay_s,
                slurm_additional_parameters=additional,
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
        settings = ElementSettings(p.signal, p.requeue, p.signal_delay_s)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's refusal
                jobs = executor.map_array(
                    run_array_element,
                    [context.execute] * len(tasks),
                    tasks,
                    [settings] * len(tasks),
                )
        except Exception as exc:  # sbatch refused, or the controller did not answer
            self._clean(folder, before, existed)
            raise PluginError(explain_refusal(str(exc), p)) from None
        return list(jobs)

    @staticmethod
    def _clean(folder: Path, before: set[Path], existed: bool) -> None:
        """Remove what a refused submission left (submitit's sbatch file and pickles)."""
        if not folder.exists():
            return
        for path in set(folder.iterdir()) - before:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if not existed and not any(folder.iterdir()):
            folder.rmdir()

    def _wait(
        self, context: LaunchContext, elements: dict[str, str], by_run: dict[str, RunTask]
    ) -> None:
        """Until no element is pending or running; an element that ended in any state but
        COMPLETED is reported lost with that state (its run folder says if it saved)."""
        arrays = sorted({e.split("_")[0] for e in elements.values()})
        states: dict[str, str] = {}
        asked = 0.0
        while True:
            context.poll()
            if time.monotonic() - asked >= QUERY_S:
                states = element_states(arrays)
                asked = time.monotonic()
                if not any(states.get(e) in ACTIVE for e in elements.values()):
                    break
            time.sleep(POLL_S)
        for run_dir, reason in _ended(elements, states).items():
            if run_dir in by_run:
                context.lost(by_run[run_dir], reason)

    def ended_jobs(self, experiment_dir: str) -> dict[str, str]:
        elements = JobRecord(experiment_dir).elements()
        return _ended(
            elements, element_states(sorted({e.split("_")[0] for e in elements.values()}))
        )

    def job_states(self, experiment_dir: str) -> dict[str, str]:
        elements = JobRecord(experiment_dir).elements()
        states = element_states(sorted({e.split("_")[0] for e in elements.values()}))
        return {
            run_dir: f"{states.get(element, 'UNKNOWN')} (job {element})"
            for run_dir, element in elements.items()
        }
