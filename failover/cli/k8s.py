"""`bfm k8s render`: print the Helm chart's manifests without helm; `bfm k8s rbac`: the
Kubernetes API grants BFM needs.

``render`` renders ``helm/bfm`` in-process (``failover.k8s_render``) and prints every
manifest as one YAML stream, sorted by template path, or writes one file per template
with ``--out``. Exit codes: 0 rendered, 2 bad values (against ``values.schema.json``),
an unreadable values file, a bad ``--set`` or a missing chart. docs/helm.md explains it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from failover.cli.errors import UsageError

k8s_app = typer.Typer(help="Kubernetes: render the Helm chart without helm.", no_args_is_help=True)


@k8s_app.command("render")
def render(
    values: Annotated[
        list[Path] | None,
        typer.Option("--values", "-f", help="A values YAML file (repeatable; later ones win)."),
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="One value, as helm --set (repeatable)."),
    ] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="The release namespace.")
    ] = "bfm",
    release: Annotated[str, typer.Option("--release", help="The release name.")] = "bfm",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write one file per template under this folder instead."),
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Another chart folder (default: BFM's).")
    ] = None,
) -> None:
    """Render the chart with the values and print the manifests (kubectl apply -f -)."""
    from failover import k8s_render

    try:
        user_values = k8s_render.values_from(values or [], set_values or [])
        rendered = k8s_render.render(user_values, chart=chart, release=release, namespace=namespace)
    except k8s_render.RenderError as err:
        raise UsageError(str(err)) from None
    if out is None:
        typer.echo(k8s_render.documents(rendered), nl=False)
        return
    for name, text in rendered.items():
        target = out / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.lstrip("-\n") if text.startswith("---") else text, "utf-8")
        except OSError as err:
            raise UsageError(
                f"cannot write {target}: {err.strerror or err}; is --out a writable folder?"
            ) from None
        typer.echo(f"wrote {target}")


@k8s_app.command("rbac")
def rbac() -> None:
    """Print the RBAC rules BFM's adapters use (the chart's Roles and ClusterRole)."""
    import yaml

    from failover.chart_files import rbac_rules

    typer.echo(yaml.safe_dump(rbac_rules(), sort_keys=False), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(k8s_app, name="k8s")
