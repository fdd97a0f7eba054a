"""`bfm dashboards build`: render dashboards/*.dashboard.py (grafanalib) to Grafana JSON.

Writes ``<out>/<uid>.json`` per dashboard (a folder Grafana's file provisioning can
read) and, with ``--configmaps``, ``<out>/configmaps/<uid>.yaml``: a ConfigMap per
dashboard labelled ``grafana_dashboard: "1"`` for Grafana's sidecar. Exit codes: 0
written, 2 a bad ``--src`` or ``--out``, or a dashboard that does not load (the message
names the file). docs/dashboards.md explains the conventions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from failover.cli.errors import UsageError

DEFAULT_OUT = Path("dashboards-build")

dashboards_app = typer.Typer(
    help="Grafana dashboards: build them from dashboards/*.dashboard.py.", no_args_is_help=True
)
OutOption = Annotated[
    Path, typer.Option("--out", help="Where to write <uid>.json (created if missing).")
]
SrcOption = Annotated[
    Path | None,
    typer.Option(
        "--src", help="The folder of *.dashboard.py files (default: the repository's dashboards/)."
    ),
]
ConfigMapsOption = Annotated[
    bool,
    typer.Option(
        "--configmaps",
        help='Also write <out>/configmaps/<uid>.yaml, labelled grafana_dashboard: "1".',
    ),
]


@dashboards_app.command("build")
def build(
    out: OutOption = DEFAULT_OUT,
    src: SrcOption = None,
    configmaps: ConfigMapsOption = False,
) -> None:
    """Render every dashboard to <out>/<uid>.json and list what was written."""
    from failover import dashboards_build as builder

    try:
        built = builder.build_all(src if src is not None else builder.default_src())
        written = builder.write_all(built, out, configmaps=configmaps)
    except builder.DashboardError as err:
        raise UsageError(str(err)) from None
    for item, path in written:
        panels = len(item.model.get("panels", []))
        typer.echo(f"wrote {path}  ({item.title}, {panels} panels, from {item.source.name})")
    typer.echo(f"{_count(len(built), 'dashboard')}, {_count(len(written), 'file')} in {out}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def register(app: typer.Typer) -> None:
    app.add_typer(dashboards_app, name="dashboards")
