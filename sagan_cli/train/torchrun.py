"""``sagan train --nproc N``: one run on N local processes started by torchrun.

This process is not a rank: it starts torchrun, shows the ranks' own lines (torchrun's
tracebacks and logger lines go to the run's ``torchrun.log``), passes stop signals on to
the ranks and reports the outcome the run folder records.

Signals: torchrun starts each rank in a session of its own, and its agent would answer
a signal by passing it on and killing the ranks 30 s later, checkpoint written or not.
So torchrun runs in its own session too (a Ctrl-C at the terminal reaches this process
only), and this process passes each stop signal it gets straight to the ranks, which take
it as a single process does: the first stops the run after the current iteration with
a checkpoint (they agree on the iteration), a second Ctrl-C or SIGTERM stops it at once.
Ranks that stopped on a signal exit 0 under this process, so torchrun never kills a
peer that is still saving; the outcome is what status.json says.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from sagan_cli.checkpoint import step_path
from sagan_cli.cores import default_threads
from sagan_cli.outcomes import RunStatus, stop_signal
from sagan_cli.results import RunDir, now, prepare_run
from sagan_cli.signals import StopRequests, die_with_parent
from sagan_cli.train.result import TrainResult
from sagan_cli.train.service import TrainingJob

PARENT_ENV = "SAGAN_TORCHRUN_PARENT"  # set for the ranks: this process reports the outcome
TORCHRUN_LOG = "torchrun.log"
_LOGGER_LINE = re.compile(r"^(\[rank\d+\]:)?\[?[DIWEF]\d{4} \d\d:\d\d:\d\d")


def torchrun_command(nproc: int, arguments: list[str]) -> list[str]:
    """``torchrun --standalone --nproc-per-node N -m sagan_cli ARGUMENTS``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "sagan_cli",
        *arguments,
    ]


def train_with_torchrun(job: TrainingJob) -> TrainResult:
    """Start the run on ``--nproc`` processes and wait; the outcome comes from the run folder.
    When a rank dies, torchrun stops the others; the run is then ``failed`` and resumable."""
    prepare_run(job.recipe, job.run)
    nproc = job.request.nproc
    # the free cores (every core for a deterministic run), shared by the ranks
    threads = str(default_threads(share=nproc, deterministic=job.recipe.train.deterministic)[0])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
        PARENT_ENV: "1",
    }
    command = torchrun_command(nproc, list(job.rank_task().arguments))
    returncode, said_why, forwarded = _run_filtered(command, env, job.run.path)
    return _outcome(job.run, returncode, said_why, forwarded)


def _outcome(run: RunDir, returncode: int, said_why: bool, forwarded: list[int]) -> TrainResult:
    status = run.read_status()
    state = RunStatus.read(status)
    log = run.path / TORCHRUN_LOG
    if state.open:  # the ranks ended without recording an outcome
        if forwarded:  # a stop signal reached them before their training loop began
            name = signal.Signals(forwarded[0]).name
            state, error = RunStatus.INTERRUPTED, f"stopped by {name} before training began"
        else:
            state = RunStatus.FAILED
            error = f"a rank died (torchrun exit code {returncode}; details in {log})"
        with contextlib.suppress(OSError):
            run.update_status(status=state, error=error, finished=now())
        status = run.read_status()
    detail = str(status.get("error") or "")
    step = int(status.get("step", 0))
    if state == RunStatus.FAILED and said_why:
        detail = "a rank said why above"  # its paragraph, once
    elif state == RunStatus.INTERRUPTED and step_path(run.checkpoints, step).exists():
        detail = f"{detail}; saved a checkpoint of it; re-run the same command to resume"
    elif state in (RunStatus.FAILED, RunStatus.INTERRUPTED) and "re-run the same" not in detail:
        detail = f"{detail}; re-run the same command to resume from the last checkpoint"
    code = status.get("exit_code")
    return TrainResult(
        run,
        state,
        step,
        "" if state == RunStatus.DONE else detail,
        stop_signal(detail) if state == RunStatus.INTERRUPTED else None,
        failed_with=code if isinstance(code, int) else None,
    )


def rank_processes(torchrun: int) -> list[int]:
    """The ranks torchrun (process ``torchrun``) started: its children running sagan_cli."""
    found = []
    for task in Path(f"/proc/{torchrun}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(pid) for pid in (task / "children").read_text().split()]
    if not Path("/proc/self").exists():  # not Linux: ask pgrep
        with contextlib.suppress(OSError):
            listed = subprocess.run(["pgrep", "-P", str(torchrun)], capture_output=True, text=True)
            found = [int(pid) for pid in listed.stdout.split()]
    ranks = []
    for pid in found:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone, or no /proc: a child of torchrun is a rank
            command = b"sagan_cli"
        if b"sagan_cli" in command:
            ranks.append(pid)
    return ranks


class RankSignals:
    """Passes this process's stop signals on to the ranks (at most two: the second stops them
    at once). Before the ranks exist, torchrun itself gets them and ends."""

    def __init__(self, torchrun: subprocess.Popen) -> None:
        self.torchrun = torchrun
        self.forwarded: list[int] = []
        self.lock = threading.Lock()  # the signal thread and the main thread both forward

    def forward(self, signum: int) -> None:
        with self.lock:
            if len(self.forwarded) >= 2 or self.torchrun.poll() is not None:
                return
            self.forwarded.append(signum)
            for pid in rank_processes(self.torchrun.pid) or [self.torchrun.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with StopRequests(announce=self.forward, abort=self.forward).installed():
            yield


def _run_filtered(
    command: list[str], env: dict[str, str], run_path: Path
) -> tuple[int, bool, list[int]]:
    """Run torchrun; the ranks' lines reach stderr, the rest lands in the run's torchrun.log.
    Returns torchrun's exit code, whether a rank printed an error paragraph, and the stop
    signals passed on to the ranks."""
    sorter = RankOutput()
    said_why = False
    with (run_path / TORCHRUN_LOG).open("a", encoding="utf-8") as log:
        log.write(f"--- {now()} {' '.join(command)}\n")
        process = subprocess.Popen(
            command,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # signals reach the ranks through this process only
            preexec_fn=die_with_parent,  # this process killed, even by SIGKILL: torchrun stops the ranks
        )
        signals = RankSignals(process)
        assert process.stderr is not None
        with signals.installed():
            for line in process.stderr:
                if sorter.shown(line):
                    said_why = said_why or line.startswith("Error:")
                    sys.stderr.write(line)
                    sys.stderr.flush()
                else:
                    log.write(line)
            return process.wait(), said_why, signals.forwarded


class RankOutput:
    """Sorts what torchrun and its ranks print: the ranks' own lines go to the terminal,
    tracebacks, torch's logger lines and torchrun's failure summary go to a log file
    (a dead rank otherwise buries the one-line outcome under a hundred lines)."""

    def __init__(self) -> None:
        self.in_traceback = False
        self.in_summary = False

    def shown(self, line: str) -> bool:
        if self.in_traceback:
            if line.strip() and not line[0].isspace():
                self.in_traceback = False  # the exception's own line ends the traceback
            return False
        if line.startswith("Traceback (most recent call last)"):
            self.in_traceback = True
            return False
        if line.startswith("=" * 20):
            self.in_summary = not self.in_summary
            return False
        return not (self.in_summary or _LOGGER_LINE.match(line))
