"""The `bfm` command line: the typer app, its command modules, and errors -> exit codes.

Each command group lives in one module listed in ``COMMAND_MODULES``; the module exposes
``register(app: typer.Typer) -> None`` and imports anything heavy inside its command
functions, so that ``bfm --help`` stays fast. ``main()`` runs the app and turns every
error into one line on stderr, ``bfm: <sentence>``, with the documented exit code:
0 ok, 1 the check or operation failed, 2 usage or input error, 3 system or store
unreachable (130 when interrupted). ``BFM_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import NoReturn

import typer

from failover.cli.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CliError,
    UsageError,
)
from failover.ports import OutcomeUnknown, StoreUnavailable

PROG_NAME = "bfm"
DEBUG_ENV = "BFM_DEBUG"
EXIT_INTERRUPTED = 130

COMMAND_MODULES: tuple[str, ...] = (
    "failover.cli.version",
    "failover.cli.simulate",
    "failover.cli.site",
    "failover.cli.status",
    "failover.cli.operate",
    "failover.cli.workload",
    "failover.cli.demo",
    "failover.cli.update",
    "failover.cli.license",
    "failover.cli.audit",
    "failover.cli.chaos",
    "failover.cli.logstore",
    "failover.cli.logs",
    "failover.cli.dashboards",
    "failover.cli.alerts",
    "failover.cli.k8s",
    "failover.cli.bundle",
)

_EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 the check or operation failed, 2 usage or input error, "
    "3 system or store unreachable."
)


def _root(ctx: typer.Context) -> None:
    """BFM, the HEMISPHERE Backbone Failover Module: keeps the backbone running across
    sites a and b, with the witness w breaking ties.
    """
    if ctx.invoked_subcommand is None:
        # A bare `bfm` is a usage error: show the help, then say so, exit 2.
        help_text = ctx.get_help()  # rich prints it itself and returns ""
        if help_text:
            typer.echo(help_text)
        raise UsageError(f"no command given; see '{PROG_NAME} --help'.")


def build_app(command_modules: Iterable[str] = COMMAND_MODULES) -> typer.Typer:
    """A fresh `bfm` app with the commands of each module in ``command_modules``."""
    cli = typer.Typer(
        name=PROG_NAME,
        no_args_is_help=False,
        add_completion=False,
        pretty_exceptions_enable=False,
        epilog=_EXIT_CODES_HELP,
    )
    # A callback keeps `bfm` a group even while it has a single command.
    cli.callback(invoke_without_command=True)(_root)
    for module_name in command_modules:
        register = getattr(importlib.import_module(module_name), "register", None)
        if not callable(register):
            raise TypeError(f"{module_name} has no register(app) function")
        register(cli)
    return cli


app = build_app()


def run(argv: Sequence[str] | None = None, *, cli: typer.Typer | None = None) -> int:
    """Run `bfm` with ``argv`` (default: the process arguments); returns the exit code."""
    command = typer.main.get_command(cli if cli is not None else app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=PROG_NAME, standalone_mode=False)
    except typer.TyperException as error:
        # Typer's (vendored click's) usage errors: bad option, missing argument, ...
        return _report(_usage_sentence(error), error.exit_code)
    except typer.Abort:
        return _report("interrupted.", EXIT_INTERRUPTED)
    except CliError as error:
        return _report(str(error), error.exit_code, error=error)
    except StoreUnavailable as error:
        sentence = str(error) or "the coordination store could not be reached."
        return _report(sentence, EXIT_UNREACHABLE, error=error)
    except OutcomeUnknown as error:
        sentence = str(error) or "a store write was sent but its outcome is unknown."
        return _report(sentence, EXIT_UNREACHABLE, error=error)
    except Exception as error:
        sentence = (
            f"internal error: {type(error).__name__}: {_one_line(str(error))}; "
            f"rerun with {DEBUG_ENV}=1 for the traceback"
        )
        return _report(sentence, EXIT_FAILED, error=error)
    # Commands end with `raise typer.Exit(code)`, which click hands back as an int.
    return result if isinstance(result, int) else EXIT_OK


def main() -> NoReturn:
    """Console-script entry point of `bfm` (and `python -m failover`)."""
    sys.exit(run())


def _report(sentence: str, exit_code: int, *, error: BaseException | None = None) -> int:
    if error is not None and _debug_enabled():
        traceback.print_exception(error, file=sys.stderr)
    typer.echo(f"{PROG_NAME}: {_one_line(sentence)}", err=True)
    return exit_code


def _usage_sentence(error: typer.TyperException) -> str:
    message = _one_line(error.format_message()).rstrip(".")
    if not message:  # a group called without its command: click printed its help already
        message = "no command given"
    # Click capitalizes its messages ("No such command"); ours read lowercase after "bfm:".
    if message[:2].istitle():
        message = message[0].lower() + message[1:]
    command_path = getattr(getattr(error, "ctx", None), "command_path", None)
    if not command_path:
        return f"{message}."
    return f"{message}; see '{command_path} --help'."


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
