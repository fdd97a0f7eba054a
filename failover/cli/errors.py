"""Errors a `bfm` command raises on purpose, each carrying its documented exit code.

Exit codes (ARCHITECTURE.md section 7): 0 ok, 1 the check or operation failed, 2 usage or
input error, 3 system or store unreachable. A command raises one of these with a single
sentence that names the thing and the fix; ``failover.cli.main`` prints it as
``bfm: <sentence>`` on stderr, never with a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    """An error meant for the operator: its message is printed as is, with ``exit_code``."""

    exit_code: int = EXIT_FAILED


class CheckFailed(CliError):
    """The check or operation ran and its answer is "no" (exit 1)."""

    exit_code = EXIT_FAILED


class UsageError(CliError):
    """The command line or an input value is wrong (exit 2)."""

    exit_code = EXIT_USAGE


class Unreachable(CliError):
    """A system or the coordination store could not be reached (exit 3)."""

    exit_code = EXIT_UNREACHABLE
