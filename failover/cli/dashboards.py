"""`bfm dashboards build`: render dashboards/*.dashboard.py (grafanalib) to Grafana JSON;
`bfm dashboards preview`: draw them from real backends without Grafana.

``build`` writes ``<out>/<uid>.json`` per dashboard (a folder Grafana's file provisioning
can read) and, with ``--configmaps``, ``<out>/configmaps/<uid>.yaml``: a ConfigMap per
dashboard labelled ``grafana_dashboard: "1"`` for Grafana's sidecar. Exit codes: 0
written, 2 a bad ``--src`` or ``--out``, or a dashboard that does not load (the message
names the file). ``preview`` writes ``<out>/<uid>.html`` per dashboard and an index: 0
every query answered, 1 some did not (the pages are written all the same and show each
error), 2 a bad option. docs/dashboards.md explains both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from failover.cli.durations import duration_option, point_in_time_option
from failover.cli.errors import CheckFailed, UsageError

DEFAULT_OUT = Path("dashboards-build")

DEFAULT_PREVIEW_OUT = Path("dashboards-preview")
DEFAULT_SINCE_S = 900.0

dashboards_app = typer.Typer(
    help="Grafana dashboards: build them from dashboards/*.dashboard.py, or preview them.",
    no_args_is_help=True,
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


@dashboards_app.command("preview")
def preview(
    prometheus: Annotated[
        str,
        typer.Option("--prometheus", metavar="URL", help="Prometheus, e.g. http://127.0.0.1:9090."),
    ],
    loki: Annotated[
        str, typer.Option("--loki", metavar="URL", help="Loki or BFM's log store (logs panels).")
    ] = "",
    traces: Annotated[
        str,
        typer.Option(
            "--traces", metavar="URL", help="Tempo's trace-by-id API (default: the --loki URL)."
        ),
    ] = "",
    since_s: Annotated[
        float | None,
        typer.Option(
            "--since",
            parser=duration_option,
            metavar="DURATION",
            help="Show the last DURATION (default 15m); not with --start.",
        ),
    ] = None,
    start_s: Annotated[
        float | None,
        typer.Option(
            "--start",
            parser=point_in_time_option,
            metavar="TIME",
            help="From this RFC 3339 time (or DURATION ago).",
        ),
    ] = None,
    end_s: Annotated[
        float | None,
        typer.Option(
            "--end", parser=point_in_time_option, metavar="TIME", help="Until then (default now)."
        ),
    ] = None,
    site: Annotated[
        str, typer.Option("--site", metavar="A,B", help="Sites to select (default all).")
    ] = "",
    component: Annotated[
        str, typer.Option("--component", metavar="A,B", help="Components (default all).")
    ] = "",
    variable: Annotated[
        list[str] | None,
        typer.Option(
            "--var", metavar="NAME=VALUE", help="Any variable, e.g. trace_id=4bf9...; repeatable."
        ),
    ] = None,
    dashboard: Annotated[
        list[str] | None,
        typer.Option("--dashboard", metavar="UID", help="Only this one (repeatable); default all."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Where to write <uid>.html and index.html.")
    ] = DEFAULT_PREVIEW_OUT,
    src: SrcOption = None,
    scrape_interval_s: Annotated[
        float,
        typer.Option(
            "--scrape-interval",
            parser=duration_option,
            metavar="DURATION",
            show_default="1s",
            help="Prometheus' scrape interval, for $__rate_interval.",
        ),
    ] = 1.0,
    timeout_s: Annotated[
        float,
        typer.Option(
            "--timeout",
            parser=duration_option,
            metavar="DURATION",
            show_default="10s",
            help="Per request.",
        ),
    ] = 10.0,
) -> None:
    """Run each dashboard's queries against real backends and draw them as static HTML.

    Writes <out>/<uid>.html per dashboard (self-contained: opens offline) and
    <out>/index.html. Exit 0 every query answered; 1 some failed or a backend did not
    answer (the pages are written and show each error in its panel); 2 a bad option.
    """
    import time

    from failover import dashboards_build as builder
    from failover import dashboards_preview as previewer
    from failover.dashboards_query import Backends, Window

    backends = Backends(
        prometheus_url=_url(prometheus, "--prometheus"),
        loki_url=_url(loki, "--loki") if loki else "",
        traces_url=_url(traces or loki, "--traces") if traces or loki else "",
        timeout_s=timeout_s,
    )
    window = Window(
        *_window(since_s, start_s, end_s, now_s=time.time()), scrape_interval_s=scrape_interval_s
    )
    selections = _selections(site, component, variable or [])
    try:
        built = builder.build_all(src if src is not None else builder.default_src())
    except builder.DashboardError as err:
        raise UsageError(str(err)) from None
    models = _chosen([item.model for item in built], dashboard or [])
    try:
        written = previewer.preview_dashboards(models, backends, window, out, selections)
    except OSError as err:
        raise UsageError(
            f"cannot write the preview to {out}: {err.strerror or err}; is --out a writable folder?"
        ) from None
    errors: dict[str, list[str]] = {}
    for page in written:
        typer.echo(
            f"wrote {page.path}  ({page.title}, {page.panels} panels, "
            f"{_count(len(page.results), 'query')}, {len(page.failed)} failed)"
        )
        for error in sorted({result.error for result in page.failed}):
            errors.setdefault(error, []).append(page.uid)
    typer.echo(f"wrote {out / previewer.INDEX}")
    for error, uids in errors.items():
        typer.echo(f"bfm: {error} ({', '.join(uids)})", err=True)
    failed = sum(len(page.failed) for page in written)
    if failed:
        total = sum(len(page.results) for page in written)
        raise CheckFailed(
            f"{failed} of {_count(total, 'query')} failed; the pages show each error in its panel"
        )


def _url(text: str, option: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"{option} {text!r} is not an http(s) URL; give one such as http://127.0.0.1:9090."
        )
    try:
        parts.port  # noqa: B018  (raises for a port that is not a number)
    except ValueError:
        raise UsageError(f"{option} {text!r} has a bad port number.") from None
    return text.strip().rstrip("/")


def _window(
    since_s: float | None, start_s: float | None, end_s: float | None, *, now_s: float
) -> tuple[float, float]:
    if since_s is not None and start_s is not None:
        raise UsageError("give --since or --start, not both.")
    end = end_s if end_s is not None else now_s
    start = start_s if start_s is not None else end - (since_s or DEFAULT_SINCE_S)
    if since_s is not None and since_s <= 0:
        raise UsageError("--since must be longer than 0s.")
    if end <= start:
        raise UsageError("the time range is empty: --start must be before --end.")
    return start, end


def _selections(site: str, component: str, variables: list[str]) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for name, text in (("site", site), ("component", component)):
        values = [value.strip() for value in text.split(",") if value.strip()]
        if values:
            chosen[name] = values
    for item in variables:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"--var {item!r} is not NAME=VALUE (e.g. --var trace_id=4bf92f35).")
        chosen.setdefault(name.strip(), []).append(value)
    return chosen


def _chosen(models: list[dict[str, Any]], wanted: list[str]) -> list[dict[str, Any]]:
    if not wanted:
        return models
    by_uid = {str(model["uid"]): model for model in models}
    chosen = []
    for name in wanted:
        uid = name if name in by_uid else f"bfm-{name}"
        if uid not in by_uid:
            raise UsageError(
                f"no dashboard {name!r}; the dashboards are {', '.join(sorted(by_uid))}."
            )
        chosen.append(by_uid[uid])
    return chosen


def _count(number: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number} {noun}" if number == 1 else f"{number} {plural}"


def register(app: typer.Typer) -> None:
    app.add_typer(dashboards_app, name="dashboards")
