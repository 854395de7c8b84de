"""Developer sessions: ``nox -s tests`` (what CI runs), ``lint``, ``typecheck``, ``demo``, ``bench``.

The tests session installs the package and the example plugin as a user would
(not editable), so packaging mistakes such as a recipe missing from the wheel
fail here rather than on a user's machine.
"""

import os
import sys

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_venv = "yes"

EXTRA_PLUGIN = "./plugins/sagan-extra-attention"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; arguments go to pytest (``nox -s tests -- -k recipe -x``)."""
    session.install(".[test,ray,slurm,tensorboard,hf,dinov2]")
    session.install(EXTRA_PLUGIN)
    env = {"SAGAN_EXPECT_EXTRA_PLUGIN": "1"}
    if sys.platform == "linux" and os.geteuid() == 0:
        # as root (CI) the real SLURM cluster and Ray head are installed and must run
        session.run("bash", "tests/install_testbed.sh", external=True)
        env["SAGAN_EXPECT_TESTBED"] = "1"
    session.run("pytest", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint rules and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package."""
    session.install(".", "mypy>=1.10")
    session.run("mypy", "sagan_cli")


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
