"""Implements a hook name that does not exist."""

from sagan_cli.plugins import hookimpl


@hookimpl
def sagan_register_atention(register):
    pass
