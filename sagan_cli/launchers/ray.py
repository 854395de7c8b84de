"""``ray``: every run is a Ray task with its CPU/GPU request.

``address`` is ``auto`` (the cluster this machine is a node of), ``host:port``
/ ``ray://host:port`` (a remote cluster), or unset: a local instance started for
the grid and stopped after it. The workers need sagan-cli (and the run's
plugins) installed and the results folder at the same path: a shared filesystem.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from sagan_cli.api import LaunchContext, Launcher
from sagan_cli.errors import PluginError
from sagan_cli.extras import optional
from sagan_cli.launchers.params import RayParams


def _ray(local: bool) -> Any:
    if local:
        # A local instance serves this machine only: Ray's single-machine mode (its default on
        # macOS and Windows) keeps every address on loopback, so no firewall or missing
        # route to this host's own network address can stop it. Read when ray is imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not sys.stderr.isatty():  # logs and pipes: no colour codes or dedup notices around lines
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    return optional("ray", "ray", "ray", "--launcher ray", "use --launcher local")


def _host_port(address: str) -> tuple[str, int] | None:
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host or "127.0.0.1", int(port)


class RayLauncher(Launcher):
    def __init__(self, params: RayParams) -> None:
        self.params = params
        if params.address is not None and (Path.home() / ".ray" / "auth_token").is_file():
            # `ray start --head` turns token authentication on when this machine has a token;
            # a driver sends it only when told to (before ray is imported)
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        self.ray = _ray(local=params.address is None)

    def check(self) -> None:
        address = self.params.address
        if address is None:
            return
        if address == "auto":  # the cluster this machine belongs to, as `ray start` recorded it
            try:
                from ray._private.services import canonicalize_bootstrap_address

                address = canonicalize_bootstrap_address("auto") or ""
            except ImportError:  # another Ray version: ray.init will say it
                return
            except ConnectionError:
                raise PluginError(
                    "launch.address = 'auto' but no Ray cluster runs on this machine (neither "
                    "RAY_ADDRESS nor a `ray start` record). Start one with `ray start --head`, "
                    "give its host:port, or leave launch.address unset for a local instance."
                ) from None
        target = _host_port(address)
        if target is None:
            raise PluginError(
                f"launch.address = '{address}' is not 'auto', host:port or ray://host:port."
            )
        try:
            with socket.create_connection(target, timeout=self.params.connect_timeout_s):
                pass
        except OSError as exc:
            raise PluginError(
                f"The Ray cluster at launch.address = '{address}' does not answer "
                f"({exc.strerror or exc}, waited up to {self.params.connect_timeout_s:g} s). Start "
                f"it (`ray start --head`), fix the address, or leave launch.address unset for a "
                f"local instance."
            ) from None

    def launch(self, context: LaunchContext) -> None:
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if self.params.address is None:  # a new instance, never a cluster found running
                options["address"] = "local"
                options["num_cpus"] = self.params.num_cpus
                options["num_gpus"] = None if context.gpus_per_run else 0
            else:
                options["address"] = self.params.address
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise PluginError(
                    f"Ray could not start or connect (launch.address = "
                    f"{self.params.address!r}): {str(exc).splitlines()[0]}. Start the cluster "
                    f"(`ray start --head`), fix launch.address, or leave it unset for a local "
                    f"instance; nothing was run."
                ) from None
        try:
            cpus = self.params.cpus_per_run or context.cpus_per_run
            gpus = (
                self.params.gpus_per_run
                if self.params.gpus_per_run is not None
                else context.gpus_per_run
            )
            remote = ray.remote(context.execute).options(
                num_cpus=cpus, num_gpus=gpus, max_retries=0
            )
            pending = {remote.remote(task): task for task in context.tasks}
            context.report(
                f"ray: {len(pending)} run(s) submitted ({cpus:g} CPU, {gpus:g} GPU each)"
            )
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)  # the poll interval
                context.poll()
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        ray.get(ref)
                    except Exception as exc:  # the task's process died: the host records it
                        context.lost(task, f"its Ray task died ({type(exc).__name__})")
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # SIGINT to the task: it checkpoints at the next boundary
            raise
        finally:
            if started_here:
                ray.shutdown()
