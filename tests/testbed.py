"""Real cluster components for the tests: a one-node SLURM cluster and a Ray head, on 127.0.0.1.

Everything lives in one folder of its own (configuration, state, logs, sockets),
listens on loopback with its own free ports, and is stopped by PID:

* ``SlurmCluster``: munged, MariaDB (for accounting), slurmdbd, slurmctld and one
  slurmd, with ``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny``;
  ``sacct`` works, accounts and QoS are enforced (account ``sagan``, QoS
  ``normal``). Needs Debian's ``slurm-wlm slurmdbd munge mariadb-server`` (the
  nox session installs them as root: ``tests/install_testbed.sh``) and root.
* ``RayHead``: ``ray start --head`` on 127.0.0.1 with its own ports and temp dir.

``python tests/testbed.py slurm|ray DIR`` starts one by hand and prints how to use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SLURM_BINARIES = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch", "sacct")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_factor() -> float:
    """How much slower than a quiet machine this one is right now: the 1-minute load average
    per core, at least 1. Every safety limit of the tests is multiplied by it, so a busy
    machine never fails what a quiet one passes."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def wait_until(check, what: str, timeout: float = 60.0, log: Path | None = None) -> None:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout * load_factor():
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def slurm_missing() -> str | None:
    """Why a SLURM cluster cannot be started here, or None."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (tests/install_testbed.sh installs them)"
    if os.geteuid() != 0:
        return "slurmd must run as root"
    return None


class SlurmCluster:
    """A one-node SLURM cluster in ``folder``; ``env`` is what clients need (SLURM_CONF)."""

    cluster = "sagantest"
    partition = "debug"
    account = "sagan"

    def __init__(self, folder: Path, cpus: int = 2) -> None:
        self.folder = folder
        self.cpus = cpus
        self.pids: dict[str, Path] = {}
        self.ports = {name: free_port() for name in ("ctld", "slurmd", "dbd", "mysql")}
        self.munge_socket = folder / "munge" / "munge.socket"
        self.conf = folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(
        self, *command: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(command),
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout * load_factor(),
        )

    def start(self) -> SlurmCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        for sub in ("munge", "state", "spool", "mysql", "logs"):
            (self.folder / sub).mkdir(exist_ok=True)
        self._start_munge()
        self._start_mariadb()
        self._write_configs()
        self._start_daemon("slurmdbd", ["slurmdbd"], port=self.ports["dbd"])
        self.run("sacctmgr", "-i", "add", "cluster", self.cluster)
        self.run("sacctmgr", "-i", "add", "account", self.account)
        self.run("sacctmgr", "-i", "add", "user", "root", f"account={self.account}")
        self._start_daemon("slurmctld", ["slurmctld"], port=self.ports["ctld"])
        self._start_daemon("slurmd", ["slurmd", "-N", "localhost"], port=self.ports["slurmd"])
        wait_until(
            self._node_idle, "the node became idle", log=self.folder / "logs" / "slurmctld.log"
        )
        return self

    def _node_idle(self) -> bool:
        state = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
        return state in ("idle", "mix", "alloc")

    def _start_munge(self) -> None:
        key = self.folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        pid = self.folder / "munge" / "munged.pid"
        subprocess.run(
            [
                "munged", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                f"--pid-file={pid}", f"--log-file={self.folder / 'logs' / 'munged.log'}",
                f"--seed-file={self.folder / 'munge' / 'seed'}",
            ],
            check=True,
        )  # fmt: skip
        self.pids["munged"] = pid
        wait_until(self.munge_socket.exists, "munged's socket appeared")

    def _start_mariadb(self) -> None:
        data = self.folder / "mysql"
        subprocess.run(
            [
                "mariadb-install-db",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
            ],
            check=True,
            capture_output=True,
        )
        pid = self.folder / "mysql" / "mariadb.pid"
        log = self.folder / "logs" / "mariadb.log"
        with log.open("w") as out:
            subprocess.Popen(
                [
                    "mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
                    f"--socket={self.folder / 'mysql' / 'mysqld.sock'}", f"--port={self.ports['mysql']}",
                    "--bind-address=127.0.0.1", f"--pid-file={pid}", "--skip-grant-tables",
                    "--innodb-buffer-pool-size=32M", "--skip-name-resolve",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.pids["mariadbd"] = pid
        wait_until(
            lambda: _listening(self.ports["mysql"]) and pid.exists(), "MariaDB started", log=log
        )

    def _write_configs(self) -> None:
        logs, f = self.folder / "logs", self.folder
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        dbd = f / "slurmdbd.conf"
        dbd.write_text(
            auth
            + textwrap.dedent(f"""\
            DbdHost=localhost
            DbdAddr=127.0.0.1
            DbdPort={self.ports["dbd"]}
            CommunicationParameters=NoInAddrAny
            SlurmUser=root
            StorageType=accounting_storage/mysql
            StorageHost=127.0.0.1
            StoragePort={self.ports["mysql"]}
            StorageUser=root
            StorageLoc=slurm_acct_db
            PidFile={f / "slurmdbd.pid"}
            LogFile={logs / "slurmdbd.log"}
            """)
        )
        dbd.chmod(0o600)
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        self.conf.write_text(
            auth
            + textwrap.dedent(f"""\
            ClusterName={self.cluster}
            SlurmctldHost=localhost(127.0.0.1)
            SlurmctldPort={self.ports["ctld"]}
            SlurmdPort={self.ports["slurmd"]}
            CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
            SlurmUser=root
            SlurmdUser=root
            StateSaveLocation={f / "state"}
            SlurmdSpoolDir={f / "spool"}
            SlurmctldPidFile={f / "slurmctld.pid"}
            SlurmdPidFile={f / "slurmd.pid"}
            SlurmctldLogFile={logs / "slurmctld.log"}
            SlurmdLogFile={logs / "slurmd.log"}
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/slurmdbd
            AccountingStorageHost=127.0.0.1
            AccountingStoragePort={self.ports["dbd"]}
            AccountingStoragePass={self.munge_socket}
            AccountingStorageEnforce=associations,qos
            MpiDefault=none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_CPU
            SchedulerType=sched/backfill
            ReturnToService=2
            KillWait=10
            MinJobAge=600
            InactiveLimit=0
            SlurmctldTimeout=30
            SlurmdTimeout=60
            NodeName=localhost NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={self.cpus} RealMemory={memory} State=UNKNOWN
            PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
            """)
        )

    def _start_daemon(self, name: str, command: list[str], port: int) -> None:
        log = self.folder / "logs" / f"{name}.log"
        subprocess.run(command, env=self.env, check=True, capture_output=True)
        self.pids[name] = self.folder / f"{name}.pid"
        wait_until(lambda: _listening(port), f"{name} listening on {port}", log=log)

    def stop(self) -> None:
        # jobs first: their steps (slurmstepd and the training under it) outlive slurmd
        if "slurmctld" in self.pids:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.run("scancel", "--full", "--user", "root", check=False, timeout=10)
                deadline = time.monotonic() + 30 * load_factor()
                while time.monotonic() < deadline:
                    queued = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10)
                    if queued.returncode != 0 or not queued.stdout.strip():
                        break
                    time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            stop_pid_file(self.pids.get(name))


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_pid_file(path: Path | None, grace: float = 3.0) -> None:
    """Stop the process whose pid ``path`` holds (:func:`stop_processes`)."""
    if path is None or not path.exists():
        return
    try:
        pid = int(path.read_text().split()[0])
    except (ValueError, IndexError, OSError):
        return
    stop_processes([pid], grace)


def stop_processes(pids: list[int], grace: float) -> None:
    """SIGTERM each of ``pids``; SIGKILL those that have not gone in ``grace`` s."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class RayHead:
    """``ray start --head`` on 127.0.0.1 with its own ports and temp dir.

    Ray also listens on every interface it finds, so the head runs in a network
    namespace of its own that has only loopback (``ip netns``, as root); ``prefix``
    runs a command inside it (the driver must run there too). ``address`` is what
    ``launch.address`` takes.
    """

    def __init__(self, folder: Path, cpus: int = 2, token: str | None = None) -> None:
        # Ray's session folder holds Unix sockets, whose paths may not pass 107 bytes: a
        # pytest folder (deeper under pytest-xdist) can be too long, so it lives under /tmp
        # with a short name, linked from ``folder`` (where the test's files are)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        (folder / "ray-session").symlink_to(self.folder)
        self.cpus = cpus
        self.token = token  # token authentication with this token (RAY_AUTH_MODE=token)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.netns = f"sagan-ray-{os.getpid()}-{self.port}"
        self.prefix: list[str] = ["ip", "netns", "exec", self.netns]

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        if self.token is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        return env

    def start(self) -> RayHead:
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        ray = str(Path(sys.executable).with_name("ray"))
        started = subprocess.run(
            [
                *self.prefix, ray, "start", "--head", "--node-ip-address=127.0.0.1",
                f"--port={self.port}", f"--num-cpus={self.cpus}", "--num-gpus=0",
                "--include-dashboard=false", f"--temp-dir={self.folder}",
                "--disable-usage-stats",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180 * load_factor(),
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{started.stdout}\n{started.stderr}")
        return self

    def stop(self) -> None:
        # the processes of this head only: `ray stop` would end every Ray process on the
        # machine, another test's head included (it finds them by name, not by namespace)
        listed = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False
        )
        stop_processes([int(pid) for pid in listed.stdout.split()], 10 * load_factor())
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def ray_missing() -> str | None:
    """Why a Ray head cannot be started here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (a network namespace keeps Ray on loopback)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path(sys.executable).with_name("ray").exists():
        return "ray is not installed (the [ray] extra)"
    return None


if __name__ == "__main__":
    kind, folder = sys.argv[1], Path(sys.argv[2])
    if kind == "slurm":
        cluster = SlurmCluster(folder).start()
        print(f"export SLURM_CONF={cluster.conf}   # then sinfo, sbatch, sacct ...")
    else:
        head = RayHead(folder).start()
        print(f"launch.address={head.address}")
