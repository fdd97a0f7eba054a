"""One trace's spans and log lines as a single timeline sorted by time (pure: no I/O).

Rows are span starts (with the duration), span events, log lines and span ends. A row
says where it happened: the site (a span's ``bfm.site`` resource attribute; a log line's
own ``site`` field, else its ``site`` label or metadata) and the component (a span's
service name; a line's ``component`` field, else label). Linked traces are followed one
hop: spans of the focus trace that link to another trace, and spans of another trace
that link to the focus trace; their rows are marked ``linked``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bfm_observe.logstore.loki_answers import LogLine
    from bfm_observe.logstore.records import AttributeValue, SpanRecord

# The JSON log fields bfm_observe.logs writes; the others are shown as key=value.
_CORE_FIELDS = frozenset(
    {"ts", "level", "logger", "msg", "site", "component", "trace_id", "span_id", "error"}
)
KIND_ORDER = {"span": 0, "event": 1, "context": 2, "log": 2, "end": 3}  # within one ns


@dataclass(frozen=True)
class LineView:
    """What a log line says, read from its JSON fields, metadata and labels."""

    site: str
    component: str
    level: str
    msg: str  # the JSON line's msg with its extra fields, or the whole non-JSON line
    trace_id: str
    span_id: str
    logger: str = ""


@dataclass(frozen=True)
class TimelineRow:
    ts_ns: int
    site: str
    component: str
    trace_id: str
    kind: str  # "span" (start), "event", "log", "context" (a line of another trace) or "end"
    text: str
    linked: bool = False  # from a trace linked to the focus trace, not the focus trace
    span_id: str = ""
    level: str = ""  # the log level; "error" for a span that failed

    @property
    def short_trace_id(self) -> str:
        return self.trace_id[:8]


def describe_line(entry: LogLine) -> LineView:
    """The fields of a BFM JSON log line; a non-JSON line is its own message."""
    doc = _json_object(entry.line)

    def pick(name: str, *fallbacks: str) -> str:
        value = doc.get(name)
        if isinstance(value, str) and value:
            return value
        return next((v for v in map(entry.value_of, (name, *fallbacks)) if v), "")

    if not doc:
        msg = entry.line
    else:
        msg = str(doc.get("msg", doc.get("message", "")))
        extras = [f"{k}={_compact(v)}" for k, v in doc.items() if k not in _CORE_FIELDS]
        if doc.get("error"):
            extras.append(f"error={_compact(_last_line(str(doc['error'])))}")
        msg = " ".join([msg, *extras]) if extras else msg
    return LineView(
        site=pick("site"),
        component=pick("component", "service_name"),
        level=pick("level", "detected_level").lower(),
        msg=msg,
        trace_id=pick("trace_id").lower(),
        span_id=pick("span_id").lower(),
        logger=pick("logger"),
    )


def linked_trace_ids(spans: Iterable[SpanRecord], focus_trace_id: str) -> list[str]:
    """Trace ids one link away from the focus trace, either direction, first seen first."""
    focus = focus_trace_id.lower()
    found: dict[str, None] = {}
    for span in spans:
        if span.trace_id == focus:
            found.update((link.trace_id, None) for link in span.links if link.trace_id != focus)
        elif any(link.trace_id == focus for link in span.links):
            found[span.trace_id] = None
    return list(found)


def build_timeline(
    spans: Sequence[SpanRecord],
    lines: Sequence[LogLine],
    *,
    focus_trace_id: str,
    context: Sequence[LogLine] = (),
) -> list[TimelineRow]:
    """The rows of the focus trace and its one-hop linked traces, oldest first.

    Spans and lines of other traces are left out; a line without a trace id is kept (it
    was fetched for this trace). ``context`` lines (what the sites the trace observed said
    last before it, :func:`observed_sites`) are kept whatever their trace, as rows of kind
    ``context``. Duplicates (the same span, the same line) appear once.
    """
    focus = focus_trace_id.lower()
    wanted = {focus, *linked_trace_ids(spans, focus)}
    rows: dict[tuple[Any, ...], TimelineRow] = {}
    for span in spans:
        if span.trace_id in wanted:
            for row in _span_rows(span, linked=span.trace_id != focus):
                rows.setdefault((row.kind, row.trace_id, row.span_id, row.ts_ns, row.text), row)
    for entry in lines:
        view = describe_line(entry)
        if view.trace_id and view.trace_id not in wanted:
            continue
        linked = bool(view.trace_id) and view.trace_id != focus
        rows.setdefault(_line_key(entry, view), _line_row(entry, view, "log", linked=linked))
    for entry in context:  # a line also fetched for the trace stays a "log" row
        view = describe_line(entry)
        rows.setdefault(_line_key(entry, view), _line_row(entry, view, "context", linked=False))
    return sorted(
        rows.values(),
        key=lambda r: (r.ts_ns, KIND_ORDER.get(r.kind, 9), r.trace_id != focus, r.span_id),
    )


def _line_key(entry: LogLine, view: LineView) -> tuple[Any, ...]:
    return ("log", entry.ts_ns, entry.line, view.site, view.component)


def _line_row(entry: LogLine, view: LineView, kind: str, *, linked: bool) -> TimelineRow:
    return TimelineRow(
        ts_ns=entry.ts_ns,
        site=view.site,
        component=view.component,
        trace_id=view.trace_id,
        kind=kind,
        text=view.msg,
        linked=linked,
        span_id=view.span_id,
        level=view.level,
    )


def observed_sites(spans: Sequence[SpanRecord], trace_ids: Iterable[str]) -> dict[str, int]:
    """Sites that spans of these traces observed (an event's ``bfm.site``, such as a
    controller's "site-down" observation), each with the time of its first observation:
    the timeline shows what such a site said last before then (a crashed site's final
    lines)."""
    wanted = set(trace_ids)
    first_ns: dict[str, int] = {}
    for span in spans:
        if span.trace_id not in wanted:
            continue
        for event in span.events:
            site = event.attributes.get("bfm.site")
            if isinstance(site, str) and site and event.ts_ns < first_ns.get(site, 1 << 63):
                first_ns[site] = event.ts_ns
    return first_ns


def format_duration_ns(duration_ns: int) -> str:
    """``0.042 ms``, ``12.3 ms``, ``2.345 s``."""
    if duration_ns < 1_000_000:
        return f"{duration_ns / 1e6:.3f} ms"
    if duration_ns < 1_000_000_000:
        return f"{duration_ns / 1e6:.1f} ms"
    return f"{duration_ns / 1e9:.3f} s"


def span_site(span: SpanRecord) -> str:
    for source, key in (
        (span.resource, "bfm.site"),
        (span.attributes, "bfm.site"),
        (span.resource, "cloud.availability_zone"),
    ):
        value = source.get(key)
        if value not in (None, ""):
            return str(value)
    return ""


def _span_rows(span: SpanRecord, *, linked: bool) -> list[TimelineRow]:
    site = span_site(span)
    component = span.service or str(span.resource.get("service.name", ""))
    failed = span.status == "error"
    status = f" ERROR{': ' + span.status_message if span.status_message else ''}" if failed else ""
    targets = [link.trace_id[:8] for link in span.links if link.trace_id != span.trace_id]
    links = f" -> links to {', '.join(targets)}" if targets else ""
    duration = format_duration_ns(max(0, span.end_ns - span.start_ns))

    def row(ts_ns: int, kind: str, text: str, level: str = "") -> TimelineRow:
        return TimelineRow(
            ts_ns, site, component, span.trace_id, kind, text, linked, span.span_id, level
        )

    level = "error" if failed else ""
    rows = [row(span.start_ns, "span", f"{span.name} ({duration}){status}{links}", level)]
    rows += [
        row(event.ts_ns, "event", " ".join([event.name, *_attributes(event.attributes)]))
        for event in span.events
    ]
    if span.end_ns > span.start_ns:
        rows.append(row(span.end_ns, "end", f"{span.name}{status}", level))
    return rows


def _attributes(attributes: Mapping[str, AttributeValue]) -> list[str]:
    return [f"{k}={_compact(v)}" for k, v in attributes.items()]


def _json_object(line: str) -> dict[str, Any]:
    if not line.startswith("{"):
        return {}
    try:
        doc = json.loads(line)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _compact(value: object) -> str:
    if isinstance(value, str):
        return (
            value
            if value and not any(c.isspace() or c in "\"'=" for c in value)
            else json.dumps(value)
        )
    return json.dumps(value, separators=(",", ":"), default=str)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
