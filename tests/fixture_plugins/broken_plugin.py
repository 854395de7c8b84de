"""A plugin module that fails on import, as a half-installed package would."""

raise ImportError("simulated: libfoo.so not found")
