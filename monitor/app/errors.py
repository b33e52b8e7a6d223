"""Why the daemon cannot start, one class per exit code (``monitor.service.run_daemon`` maps them)."""

from __future__ import annotations


class StartupError(Exception):
    """The daemon cannot start; the message is one line saying why."""


class StateStartupError(StartupError):
    """The state file is corrupt, locked, unwritable or too new: restarting will not help."""


class RefusedStartupError(StartupError):
    """Every account's key was refused for its permissions: a config matter, restarting will not help."""
