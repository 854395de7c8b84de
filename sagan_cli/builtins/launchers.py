"""Built-in ablation launchers: ``local`` (processes on this machine), ``ray``, ``slurm``.

Ray and submitit are optional extras; their launchers are always registered and
say which ``pip install`` they need when chosen without it. The launchers live
in ``sagan_cli.launchers`` and are imported when built.
"""

from __future__ import annotations

from sagan_cli.api import Launcher, LauncherPlugin, NoParams, Register, hookimpl
from sagan_cli.launchers.params import RayParams, SlurmParams


def build_local(params: NoParams) -> Launcher:
    from sagan_cli.launchers.local import LocalLauncher

    return LocalLauncher()


def build_ray(params: RayParams) -> Launcher:
    from sagan_cli.launchers.ray import RayLauncher

    return RayLauncher(params)


def build_slurm(params: SlurmParams) -> Launcher:
    from sagan_cli.launchers.slurm import SlurmLauncher

    return SlurmLauncher(params)


PLUGINS = (
    LauncherPlugin(
        api_version=1,
        name="local",
        summary="Runs on this machine: in this process, or --jobs worker processes (one per GPU)",
        factory=build_local,
    ),
    LauncherPlugin(
        api_version=1,
        name="ray",
        summary="Each run is a Ray task with its CPU/GPU request, on a local or remote cluster",
        params=RayParams,
        factory=build_ray,
        extra="ray",
    ),
    LauncherPlugin(
        api_version=1,
        name="slurm",
        summary="One SLURM job array per grid through submitit (partition, time, GPUs)",
        params=SlurmParams,
        factory=build_slurm,
        extra="slurm",
    ),
)


@hookimpl
def sagan_register_launcher(register: Register) -> None:
    for plugin in PLUGINS:
        register(plugin)
