"""Implements a hook name that does not exist."""

from sagan_cli.api import hookimpl


@hookimpl
def sagan_register_atention(register):
    pass
