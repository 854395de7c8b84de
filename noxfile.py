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
# starting, signals); at most 4 keep memory in bounds (each worker imports torch)
WORKERS = ("--numprocesses", "auto", "--maxprocesses", "4", "--dist", "loadgroup")
CLUSTER_TESTS = "tests/launchers/test_clusters.py"  # the real SLURM cluster and Ray head


@nox.session
def tests(session: nox.Session) -> None:
    """What CI runs: ruff (lint and format), mypy, then the test suite on parallel workers.

    Arguments go to pytest and run one pass instead (``nox -s tests -- -k recipe -x``).
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
    # everything but the real cluster on parallel workers, slow tests first; then the
    # cluster tests alone (a Ray head beside two busy workers lost its raylet mid-test)
    session.run("pytest", *WORKERS, "--ignore", CLUSTER_TESTS, env=env)
    session.run("pytest", CLUSTER_TESTS, env=env)


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
