"""Developer sessions: ``nox -s tests`` (what CI runs: checks, then tests), ``lint``, ``demo``, ``bench``.

The tests session installs the package and the example plugin as a user would
(not editable), so packaging mistakes such as a recipe missing from the wheel
fail here rather than on a user's machine.
"""

import os
import sys

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"

EXTRA_PLUGIN = "./plugins/sagan-extra-attention"
CHECKERS = ("ruff>=0.6", "mypy>=1.10")
# pytest-xdist: two workers even on two cores, since part of the suite waits (subprocesses
# starting, signals, SLURM time limits); at most 4 keep memory in bounds (each worker imports
# torch). One module per worker (loadfile), so its module-scoped fixtures (a trained grid, a
# SLURM cluster, a Ray head) are built once.
WORKERS = ("--numprocesses", "auto", "--maxprocesses", "4", "--dist", "loadfile")


@nox.session
def tests(session: nox.Session) -> None:
    """What CI runs: ruff (lint and format), mypy, then every test on parallel workers.

    Arguments go to pytest instead (``nox -s tests -- -k recipe -x``); without ``--runslow``
    the tests marked slow are left out, as a bare ``pytest`` leaves them out.
    """
    session.install(".[test,ray,slurm,tensorboard,hf,dinov2,mlflow,wandb]", *CHECKERS)
    session.install(EXTRA_PLUGIN)
    env = {"SAGAN_EXPECT_EXTRA_PLUGIN": "1"}
    if sys.platform == "linux" and os.geteuid() == 0:
        # as root (CI) the real SLURM cluster and Ray head are installed and must run
        session.run("bash", "tests/install_testbed.sh", external=True)
        env["SAGAN_EXPECT_TESTBED"] = "1"
    if session.posargs:
        session.run("pytest", *session.posargs, env=env)
        return
    _check(session)
    session.run("pytest", *WORKERS, "--runslow", env=env)  # every test, the slow ones too


def _check(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "sagan_cli")


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff (lint rules and formatting) and mypy, as the tests session runs them."""
    session.install(".", *CHECKERS)
    _check(session)


@nox.session
def demo(session: nox.Session) -> None:
    """The README quick start: train the smoke recipe on CPU and show its run folder."""
    session.install(".")
    session.run("sagan", "train", "recipes/smoke.toml", "--device", "cpu", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks written to results/bench/ (``nox -s bench -- --device cuda``)."""
    session.install(".")
    session.run("sagan", "bench", "attention", *session.posargs)
