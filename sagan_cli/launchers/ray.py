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


def auth_token() -> tuple[str | None, str]:
    """This machine's Ray token and where it was found, in Ray's own order: RAY_AUTH_TOKEN, the
    file RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    return token or None, str(path)


GET_CLUSTER_ID = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # answered to anyone authorised


def _gcs_accepts(target: tuple[str, int], token: str | None) -> bool | None:
    """Whether the cluster's GCS answers a request with ``token`` (None: without one); None
    when it cannot be asked (no gRPC here, or another failure: ray.init says). A raw call
    (an empty request) through grpc alone: importing ray first would fix its authentication
    mode before it is known."""
    try:
        import grpc
    except ImportError:
        return None
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(f"{target[0]}:{target[1]}") as channel:
        call = channel.unary_unary(
            GET_CLUSTER_ID, request_serializer=bytes, response_deserializer=bytes
        )
        try:
            call(b"", timeout=5, metadata=metadata)
        except grpc.RpcError as exc:
            return False if exc.code() == grpc.StatusCode.UNAUTHENTICATED else None
    return True


class RayLauncher(Launcher):
    def __init__(self, params: RayParams) -> None:
        self.params = params
        self._ray: Any = None
        self.connected_here = False  # check() joined the cluster; launch() leaves it after

    @property
    def ray(self) -> Any:
        """Ray, imported once the authentication mode is known (it is read at import)."""
        if self._ray is None:
            self._ray = _ray(local=self.params.address is None)
        return self._ray

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
        if not address.startswith("ray://"):
            self._authenticate(address, target)
        self._connect()

    def _authenticate(self, address: str, target: tuple[str, int]) -> None:
        """A cluster with token authentication is joined with this machine's token: said at
        once when there is none or it is another cluster's (not after ~20 s of retries)."""
        if _gcs_accepts(target, None) is not False:
            return  # no authentication, or nothing to learn here
        token, where = auth_token()
        if token is None:
            raise PluginError(
                f"The Ray cluster at launch.address = '{address}' uses token authentication and "
                f"this machine has no token: Ray reads RAY_AUTH_TOKEN, else the file "
                f"RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token ({where}: none there). Put "
                f"the cluster's token there (`ray get-auth-token` on its head node prints it); "
                f"nothing was run."
            )
        if _gcs_accepts(target, token) is False:
            raise PluginError(
                f"The Ray cluster at launch.address = '{address}' rejects this machine's token "
                f"(from {where}): it is not the cluster's. Replace it with the cluster's token "
                f"(`ray get-auth-token` on its head node prints it); nothing was run."
            )
        os.environ["RAY_AUTH_MODE"] = "token"  # the driver sends its token only when told to

    def _connect(self) -> None:
        """Join the cluster now, before any run folder exists: a refusal leaves nothing."""
        if self.ray.is_initialized():
            return
        try:
            self.ray.init(address=self.params.address, include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PluginError(
                f"Ray could not connect to launch.address = {self.params.address!r}: "
                f"{str(exc).splitlines()[0]}. Check that the cluster runs there (`ray status` "
                f"on its head node) and that this machine's Ray version matches it; nothing "
                f"was run."
            ) from None
        self.connected_here = True

    def launch(self, context: LaunchContext) -> None:
        ray = self.ray
        started_here = self.connected_here or not ray.is_initialized()
        if not ray.is_initialized():  # a new local instance, never a cluster found running
            try:
                ray.init(
                    address="local",
                    num_cpus=self.params.num_cpus,
                    num_gpus=None if context.gpus_per_run else 0,
                    include_dashboard=False,
                    log_to_driver=True,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise PluginError(
                    f"Ray could not start a local instance: {str(exc).splitlines()[0]}. "
                    f"Check `ray start --head` works here; nothing was run."
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
