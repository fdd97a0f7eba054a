"""`bfm version`: the installed package version and the Python running it."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Annotated

import typer

from failover.cli.errors import CheckFailed

DISTRIBUTION = "bfm"


def version_facts() -> dict[str, str]:
    """The facts `bfm version` prints; ``CheckFailed`` when the package is not installed."""
    try:
        package_version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise CheckFailed(
            f"the {DISTRIBUTION} package is not installed, so its version is unknown; "
            "install it with 'pip install -e .'."
        ) from None
    return {
        "package": DISTRIBUTION,
        "version": package_version,
        "python": platform.python_version(),
    }


def version(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the bfm version and the Python version."""
    facts = version_facts()
    if as_json:
        typer.echo(json.dumps(facts, sort_keys=True))
    else:
        typer.echo(f"{facts['package']} {facts['version']} (Python {facts['python']})")


def register(app: typer.Typer) -> None:
    """Add `bfm version` to ``app``."""
    app.command("version")(version)
