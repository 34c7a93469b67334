"""The shared consoles live in :mod:`tsrx.console` (the engine prints to them too); re-exported
here for the command modules."""

from tsrx.console import console, err_console

__all__ = ["console", "err_console"]
