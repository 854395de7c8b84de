"""``local``: runs on this machine, in this process (``--jobs 1``) or in worker processes.

Workers are spawned processes, one GPU each on CUDA (``CUDA_VISIBLE_DEVICES``
set before torch touches the device) or ``threads`` torch threads each on CPU.
Workers never outlive the command: each watches its parent pid; an orphaned worker
checkpoints its run at the next iteration boundary and exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from sagan_cli.api import LaunchContext, Launcher, RunTask
from sagan_cli.outcomes import RunStatus

ORPHAN_GRACE_S = 600.0  # an orphaned worker gets this long to checkpoint and stop


class LocalLauncher(Launcher):
    supports_nproc = True

    def launch(self, context: LaunchContext) -> None:
        if context.jobs == 1 or len(context.tasks) == 1:
            for task in context.tasks:
                if context.run_here(task) == RunStatus.INTERRUPTED:
                    return  # the user stopped the grid: leave the rest queued
            return
        self._in_workers(context)

    def _in_workers(self, context: LaunchContext) -> None:
        spawn = multiprocessing.get_context("spawn")
        counter = spawn.Value("i", 0)
        stop: dict[str, int | None] = {"signal": None}

        def forward(signum: int, frame: Any) -> None:
            # Ctrl-C reaches the workers through the terminal's process group; a SIGTERM
            # sent to this process alone is passed on, so every run checkpoints and stops.
            stop["signal"] = signum
            if signum == signal.SIGTERM:
                for process in list(getattr(pool, "_processes", {}).values()):
                    if process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)

        pool = ProcessPoolExecutor(
            max_workers=context.jobs,
            mp_context=spawn,
            initializer=_start_worker,
            initargs=(counter, context.gpus_per_run > 0, os.getpid()),
        )
        previous = _install({signal.SIGINT: forward, signal.SIGTERM: forward})
        try:
            futures: dict[Future, RunTask] = {
                pool.submit(_run_task, context.execute, task): task for task in context.tasks
            }
            while futures:
                done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                context.poll()
                for future in done:
                    task = futures.pop(future)
                    try:
                        future.result()
                    except Exception as exc:  # the worker process itself died
                        context.lost(task, f"its worker process died ({type(exc).__name__})")
                if stop["signal"] is not None:
                    for future in futures:
                        future.cancel()  # not started yet: stays queued for the next run
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _install(previous)
            context.poll()


def _install(handlers: dict[int, Any]) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, h) for s, h in handlers.items()}


_busy = threading.Event()


def _start_worker(counter: Any, one_gpu_each: bool, parent_pid: int) -> None:
    """Pool initializer: the device of this worker, and dying with the parent."""
    # Idle workers ignore Ctrl-C (the terminal sends it to the whole group); a training
    # run installs its own handler and stops at an iteration boundary.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if one_gpu_each:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(64)]
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """If the parent dies: stop the run at its next boundary (one SIGTERM), then leave.
    Not the kernel's PR_SET_PDEATHSIG: it signals once per exiting thread of the parent,
    and a second SIGTERM aborts a run without its checkpoint."""
    while os.getppid() == parent_pid:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while _busy.is_set() and time.monotonic() < deadline:
        time.sleep(0.2)
    os._exit(143)


def _run_task(execute: Any, task: RunTask) -> str:
    _busy.set()
    try:
        return str(execute(task))
    finally:
        _busy.clear()
