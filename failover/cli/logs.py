"""`bfm logs` and `bfm trace`: search the log store, and show one trace as a timeline.

Both speak Loki's HTTP API (``bfm_observe.logstore.client``), so they work against BFM's
embedded store and a real Loki alike; `bfm trace` reads spans from Tempo's
``/api/traces/<id>`` at ``--traces-url`` (default: ``--url``, as the embedded store serves
both). Exit codes: 0 ok (``bfm logs`` also when nothing matched: it says so on stderr), 1
``bfm trace`` found neither spans nor lines, 2 a bad query, trace id, option or
credentials, 3 the store cannot be reached or does not answer as Loki does.

`bfm trace` follows span links one hop: from the focus trace's spans to the traces they
link to (the failover decision that delayed a message). Links *to* the focus trace are
seen only among the spans it fetched: Tempo's trace-by-id API cannot search for the
spans that link to a trace, so a decision trace does not lead to every message it
delayed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from failover.cli.durations import duration_option, format_duration_s
from failover.cli.errors import CheckFailed, CliError, Unreachable, UsageError

if TYPE_CHECKING:
    from bfm_observe.logstore.client import LogLine, LokiClient, LokiClientError, QueryResult
    from bfm_observe.logstore.records import SpanRecord
    from bfm_observe.logstore.timeline import TimelineRow

URL_ENV, TRACES_URL_ENV = "BFM_LOKI_URL", "BFM_TRACES_URL"
TOKEN_ENV, TENANT_ENV = "BFM_LOKI_TOKEN", "BFM_LOKI_TENANT"
DEFAULT_URL = "http://127.0.0.1:3100"
# Every stream BFM's Loki handler ships carries a site label (bfm_observe.loki); a
# selector must have a matcher that does not match "", so this is the widest one.
DEFAULT_SELECTOR = '{site=~".+"}'
SITE_COLOURS = {"a": "cyan", "b": "magenta", "w": "yellow"}
_OTHER_COLOURS = ("green", "blue", "bright_red", "bright_cyan", "bright_magenta")
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")

UrlOption = Annotated[
    str, typer.Option("--url", envvar=URL_ENV, help="Loki or the embedded store (base URL).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar=TOKEN_ENV, help="Bearer token, if it wants one.")
]
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", envvar=TENANT_ENV, help="Tenant (X-Scope-OrgID), if multi-tenant."),
]


def _since_option(shown: str) -> Any:
    return typer.Option(
        "--since",
        parser=duration_option,
        metavar="DURATION",
        show_default=shown,
        help="How far back.",
    )


def logs(
    query: Annotated[str, typer.Argument(help='LogQL, e.g. \'{site="a"} |= "failover"\'.')],
    since_s: Annotated[float, _since_option("1h")] = 3600.0,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many lines.")] = 100,
    forward: Annotated[bool, typer.Option("--forward", help="Oldest first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    tenant: TenantOption = None,
) -> None:
    """Search log lines (newest first) or run a metric query, over the last --since.

    Prints `time site component level message`, one line per entry; lines that are not
    JSON are printed as they are. Metric queries print their series. Exit 0 also when
    nothing matched (stderr says so), 2 a query the store refuses, 3 unreachable.
    """
    from bfm_observe.logstore.client import LokiClient, LokiClientError

    end_ns = time.time_ns()
    start_ns = end_ns - int(since_s * 1e9)
    with LokiClient(url, token=token, tenant=tenant) as client:
        try:
            result = client.query_range(
                query,
                start_ns=start_ns,
                end_ns=end_ns,
                limit=limit,
                direction="forward" if forward else "backward",
            )
        except LokiClientError as error:
            raise cli_error(error) from None
    if not result.lines and not any(s.points for s in result.series):
        what = "no lines matched" if result.result_type == "streams" else "no series for"
        typer.echo(f"bfm: {what} {query} in the last {format_duration_s(since_s)}.", err=True)
        return
    for text in render_json(result) if as_json else render_text(result):
        typer.echo(text)


def trace(
    trace_id: Annotated[str, typer.Argument(help="32 hex digits, as in a log line's trace_id.")],
    since_s: Annotated[float, _since_option("1d")] = 86400.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
    url: UrlOption = DEFAULT_URL,
    traces_url: Annotated[
        str | None,
        typer.Option(
            "--traces-url", envvar=TRACES_URL_ENV, help="Tempo-style API (default --url)."
        ),
    ] = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    no_links: Annotated[bool, typer.Option("--no-links", help="Do not follow span links.")] = False,
    selectors: Annotated[
        list[str] | None,
        typer.Option(
            "--selector", help=f"Streams to search, repeatable (default {DEFAULT_SELECTOR})."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Lines per trace, at most.")] = 1000,
    context_lines: Annotated[
        int,
        typer.Option(
            "--context",
            min=0,
            help="Last lines of each site the trace observed (a crashed site's), before it.",
        ),
    ] = 5,
) -> None:
    """One trace's spans and every log line carrying its id, as one timeline.

    Follows span links one hop (a delayed message leads to the failover decision that
    delayed it). Exit 1 when neither spans nor lines are found, 2 for an id that is not 32
    hex digits, 3 when the store cannot be reached.
    """
    from bfm_observe.logstore.client import LokiClient, LokiClientError
    from bfm_observe.logstore.timeline import build_timeline, linked_trace_ids

    if not _TRACE_ID.fullmatch(trace_id.strip()):
        raise UsageError(
            f"{trace_id!r} is not a trace id; give its 32 hex digits, as in a log line's trace_id."
        )
    focus = trace_id.strip().lower()
    end_ns = time.time_ns()
    start_ns = end_ns - int(since_s * 1e9)
    warnings: list[str] = []
    with LokiClient(url, token=token, tenant=tenant, traces_url=traces_url) as client:
        spans, spans_error = _spans(client, focus, follow_links=not no_links, warnings=warnings)
        trace_ids = [focus, *([] if no_links else linked_trace_ids(spans, focus))]
        lines: list[LogLine] = []
        try:
            for tid in trace_ids:
                for selector in selectors or [DEFAULT_SELECTOR]:
                    query = f'{selector} | trace_id="{tid}"'
                    found = client.query_range(
                        query, start_ns=start_ns, end_ns=end_ns, limit=limit, direction="forward"
                    ).lines
                    if len(found) >= limit:
                        warnings.append(f"only the first {limit} lines of {query}; raise --limit.")
                    lines += found
            context = _context(client, spans, trace_ids, start_ns, context_lines)
        except LokiClientError as error:
            raise cli_error(error) from None
    rows = build_timeline(spans, lines, focus_trace_id=focus, context=context)
    if not rows and spans_error is not None:
        hint = f"set --traces-url or ${TRACES_URL_ENV}" if traces_url else ""
        raise cli_error(spans_error, hint=hint)
    for warning in warnings:
        typer.echo(f"bfm: {warning}", err=True)
    if not rows:
        raise CheckFailed(
            f"no spans and no log lines found for trace {focus} in the last "
            f"{format_duration_s(since_s)}; check the id, or look further back with --since."
        )
    if as_json:
        for row in rows:
            doc = {**dataclasses.asdict(row), "ts": rfc3339_ns(row.ts_ns)}
            typer.echo(json.dumps(doc, sort_keys=True))
        return
    from failover.cli.status import console

    console().print(render_timeline(rows, focus_trace_id=focus))


def _context(
    client: LokiClient, spans: list[SpanRecord], trace_ids: list[str], start_ns: int, count: int
) -> list[LogLine]:
    """What each site the trace observed (a controller's site-down observation) said last
    before that observation: a crashed site's final lines."""
    from bfm_observe.logstore.timeline import observed_sites

    if count == 0:
        return []
    found: list[LogLine] = []
    for site, seen_ns in sorted(observed_sites(spans, trace_ids).items()):
        selector = '{site="' + site.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        found += client.query_range(
            selector, start_ns=start_ns, end_ns=seen_ns, limit=count, direction="backward"
        ).lines
    return found


def _spans(
    client: LokiClient, focus: str, *, follow_links: bool, warnings: list[str]
) -> tuple[list[SpanRecord], LokiClientError | None]:
    """The focus trace's spans and those of the traces they link to. A trace backend that
    cannot be reached only costs the spans (a warning): the lines may still be there."""
    from bfm_observe.logstore.client import LokiAuthError, LokiClientError
    from bfm_observe.logstore.timeline import linked_trace_ids

    spans: list[SpanRecord] = []
    try:
        spans += client.trace(focus)
        if follow_links:
            for linked in linked_trace_ids(spans, focus):
                spans += client.trace(linked)
    except LokiAuthError as error:
        raise cli_error(error) from None
    except LokiClientError as error:
        warnings.append(f"no spans: {error}")
        return spans, error
    return spans, None


def cli_error(error: LokiClientError, *, hint: str = "") -> CliError:
    """The client's error as the operator's sentence with its exit code."""
    from bfm_observe.logstore.client import LokiAuthError, LokiQueryError

    if isinstance(error, LokiQueryError):
        message = " ".join(error.message.split())
        return UsageError(
            f"the log store refused the query: {message} (see docs/logql.md for the supported "
            "LogQL)"
        )
    if isinstance(error, LokiAuthError):
        return UsageError(
            f"{error.url} answered {error.status}: pass the right --token (or ${TOKEN_ENV}) "
            f"and --tenant (or ${TENANT_ENV})."
        )
    return Unreachable(f"{error} ({hint or f'set --url or ${URL_ENV}'})")


def render_text(result: QueryResult) -> list[str]:
    """`bfm logs`'s lines: aligned columns for log lines, one block per series."""
    from bfm_observe.logstore.timeline import describe_line

    if result.result_type != "streams":
        return _series_text(result)
    views = [describe_line(entry) for entry in result.lines]
    site_w, comp_w, level_w = (
        max(1, *(len(getattr(v, name)) for v in views)) for name in ("site", "component", "level")
    )
    return [
        f"{rfc3339_ns(entry.ts_ns)}  {v.site or '-':<{site_w}}  {v.component or '-':<{comp_w}}  "
        f"{v.level or '-':<{level_w}}  {v.msg}"
        for entry, v in zip(result.lines, views, strict=True)
    ]


def render_json(result: QueryResult) -> list[str]:
    if result.result_type != "streams":
        return [
            json.dumps({"metric": dict(s.metric), "points": [[t, _number(v)] for t, v in s.points]})
            for s in result.series
        ]
    return [
        json.dumps(
            {
                "labels": dict(e.labels),
                "ts": rfc3339_ns(e.ts_ns),
                "ts_ns": e.ts_ns,
                "line": e.line,
                "metadata": dict(e.metadata),
                "parsed": dict(e.parsed),
            },
            sort_keys=True,
        )
        for e in result.lines
    ]


def render_timeline(rows: list[TimelineRow], *, focus_trace_id: str) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    first_ns = rows[0].ts_ns
    sites = sorted({r.site for r in rows if r.site})
    linked = sorted({r.trace_id for r in rows if r.linked})
    spans = len({(r.trace_id, r.span_id) for r in rows if r.kind == "span"})
    head = (
        f"trace {focus_trace_id}: {spans} spans, {sum(r.kind == 'log' for r in rows)} log lines"
        f", sites {', '.join(sites) or 'unknown'}, from {rfc3339_ns(first_ns)}"
    )
    if linked:
        head += f"\nlinked traces (one hop, marked ~): {', '.join(linked)}"
    if any(r.kind == "context" for r in rows):
        head += "\ncontext: the last lines of each site the trace observed, before it did"
    table = Table(box=None, pad_edge=False)
    for column in ("time (UTC)", "+s", "site", "component", "trace", "what", "text"):
        table.add_column(column, no_wrap=column != "text")
    colours = site_colours(sites)
    for row in rows:
        style = colours.get(row.site, "")
        text_style = "red" if row.level in ("error", "critical") else ""
        what = (row.level or "log") if row.kind == "log" else row.kind
        table.add_row(
            rfc3339_ns(row.ts_ns)[11:23],
            f"+{(row.ts_ns - first_ns) / 1e9:.3f}",
            Text(row.site or "-", style=style),
            Text(row.component or "-", style=style),
            Text(
                f"{'~' if row.linked else ''}{row.short_trace_id}",
                style="dim" if row.linked else "",
            ),
            Text(what, style=text_style),
            Text(row.text, style=text_style),
        )
    return Group(Text(head), table)


def site_colours(sites: list[str]) -> dict[str, str]:
    others = iter(_OTHER_COLOURS * (1 + len(sites) // len(_OTHER_COLOURS)))
    return {s: SITE_COLOURS.get(s) or next(others) for s in sorted(sites)}


def rfc3339_ns(ts_ns: int) -> str:
    """``2024-05-01T12:00:00.123Z`` (UTC, milliseconds)."""
    seconds, rest_ns = divmod(ts_ns, 1_000_000_000)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest_ns // 1_000_000:03d}Z"
    )


def _series_text(result: QueryResult) -> list[str]:
    out: list[str] = []
    for series in result.series:
        labels = ", ".join(f'{k}="{v}"' for k, v in sorted(series.metric.items()))
        if result.result_type == "matrix":
            out.append(f"{{{labels}}}")
            out += [f"  {rfc3339_ns(t)}  {v:g}" for t, v in series.points]
        else:
            out += [f"{{{labels}}}  {v:g}  at {rfc3339_ns(t)}" for t, v in series.points]
    return out


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
    app.command("trace")(trace)
