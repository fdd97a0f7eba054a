"""A double of Loki's query HTTP API and Tempo's trace-by-id API: a real
``ThreadingHTTPServer`` on 127.0.0.1 answering canned data in the documented shapes.

It is a double, not a Loki: it evaluates no LogQL. A test registers what a query string
answers (log records, or a whole ``data`` object for metric queries), and the double
shapes the answer as the documents below say, honouring ``limit``, ``direction`` and the
``categorize-labels`` encoding flag:

- Loki HTTP API: https://grafana.com/docs/loki/latest/reference/loki-http-api/ --
  ``GET /loki/api/v1/query_range``, ``/query``, ``/labels``, ``/label/<name>/values``,
  ``/series``, ``/ready``; ``{"status": "success", "data": {"resultType": "streams",
  "result": [{"stream": {...}, "values": [["<ns>", "<line>"], ...]}]}}``; errors as a 400
  with a plain-text body (a LogQL parse error), 401 ``no org id`` without a tenant.
- Structured metadata in answers: Loki's default encoding merges it into the stream
  labels; with the ``X-Loki-Response-Encoding-Flags: categorize-labels`` request header a
  Loki 3 answers ``[ns, line, {"structuredMetadata": {...}, "parsed": {...}}]`` values and
  ``data.encodingFlags`` (https://grafana.com/docs/loki/latest/get-started/labels/structured-metadata/).
  ``encoding="third"`` answers a plain ``[ns, line, {metadata}]`` third element instead.
- Tempo: https://grafana.com/docs/tempo/latest/api_docs/#query -- ``GET /api/traces/<id>``
  answers ``{"batches": [OTLP ResourceSpans]}`` with ids base64-encoded, as Tempo's
  protobuf-JSON marshalling writes them (grafana/tempo#5437), or 404 for an unknown trace.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from bfm_observe.logstore.records import LogRecord, SpanRecord

Encoding = Literal["merged", "third"]


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]  # names lowercased


class LokiApiDouble:
    """``url`` is the base URL of both APIs; use as a context manager or call ``close``."""

    def __init__(
        self,
        *,
        token: str | None = None,
        tenant: str | None = None,
        encoding: Encoding = "merged",
        honours_categorize: bool = True,
    ) -> None:
        self.token, self.tenant = token, tenant  # required when set
        self.encoding, self.honours_categorize = encoding, honours_categorize
        self.logs: dict[str, list[LogRecord]] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, tuple[int, Any]] = {}  # query or path -> (status, body)
        self.label_names: list[str] = []
        self.label_values: dict[str, list[str]] = {}
        self.series_sets: list[dict[str, str]] = []
        self.traces: dict[str, dict[str, Any]] = {}
        self.hang = False  # accept requests and answer only once closed
        self.seen: list[SeenRequest] = []
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def answer_logs(self, query: str, records: Iterable[LogRecord]) -> None:
        self.logs[query] = list(records)

    def answer_data(self, query: str, data: dict[str, Any]) -> None:
        """A metric query's whole ``data`` object (see ``matrix_data``, ``vector_data``)."""
        self.docs[query] = data

    def fail(self, query_or_path: str, status: int, body: str | dict[str, Any]) -> None:
        """Answer ``status`` with ``body`` (plain text, or a dict as JSON) to the query or path."""
        self.errors[query_or_path] = (status, body)

    def add_trace(self, spans: Sequence[SpanRecord], *, shape: str = "batches") -> None:
        self.traces[spans[0].trace_id] = tempo_json(spans, shape=shape)

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LokiApiDouble:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def answer(self, path: str, params: dict[str, list[str]], headers: dict[str, str]) -> Any:
        """(status, body) for one GET; ``body`` is a str (plain text) or JSON data."""
        query = params.get("query", [""])[-1]
        if query in self.errors or path in self.errors:
            return self.errors.get(query) or self.errors[path]
        if path == "/ready":
            return 200, "ready"
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return 401, "authentication required"
        if self.tenant and headers.get("x-scope-orgid") != self.tenant:
            return 401, "no org id"
        if path.startswith("/api/traces/"):
            doc = self.traces.get(path.removeprefix("/api/traces/"))
            return (200, doc) if doc is not None else (404, "trace not found")
        if path in ("/loki/api/v1/query_range", "/loki/api/v1/query"):
            if query in self.docs:
                return 200, {"status": "success", "data": self.docs[query]}
            flags = headers.get("x-loki-response-encoding-flags", "")
            categorize = self.honours_categorize and "categorize-labels" in flags
            data = streams_data(
                self.logs.get(query, []),
                limit=int(params.get("limit", ["100"])[-1]),
                direction=params.get("direction", ["backward"])[-1],
                encoding="categorized" if categorize else self.encoding,
            )
            return 200, {"status": "success", "data": data}
        if path == "/loki/api/v1/labels":
            return 200, {"status": "success", "data": self.label_names}
        if path.startswith("/loki/api/v1/label/") and path.endswith("/values"):
            name = unquote(path.split("/")[5])
            return 200, {"status": "success", "data": self.label_values.get(name, [])}
        if path == "/loki/api/v1/series":
            return 200, {"status": "success", "data": self.series_sets}
        return 404, "404 page not found"


def _handler(double: LokiApiDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query, keep_blank_values=True)
            headers = {k.lower(): v for k, v in self.headers.items()}
            double.seen.append(SeenRequest("GET", parts.path, params, headers))
            if double.hang:
                double._release.wait(10)
                return
            status, body = double.answer(parts.path, params, headers)
            is_text = isinstance(body, str)
            payload = (body if is_text else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if is_text else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


def streams_data(
    records: Sequence[LogRecord],
    *,
    limit: int = 100,
    direction: str = "backward",
    encoding: Literal["merged", "third", "categorized"] = "merged",
) -> dict[str, Any]:
    """A ``streams`` result of ``records``: the ``limit`` newest (backward) or oldest."""
    chosen = sorted(records, key=lambda r: r.ts_ns, reverse=direction == "backward")[:limit]
    streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for record in chosen:
        labels = dict(record.labels)
        value: list[Any] = [str(record.ts_ns), record.line]
        if encoding == "merged":
            labels |= record.metadata
        elif encoding == "third" and record.metadata:
            value.append(dict(record.metadata))
        elif encoding == "categorized" and record.metadata:
            value.append({"structuredMetadata": dict(record.metadata)})
        streams.setdefault(tuple(sorted(labels.items())), []).append(value)
    data: dict[str, Any] = {
        "resultType": "streams",
        "result": [{"stream": dict(k), "values": v} for k, v in streams.items()],
        "stats": {},
    }
    if encoding == "categorized":
        data["encodingFlags"] = ["categorize-labels"]
    return data


def matrix_data(series: Sequence[tuple[dict[str, str], Sequence[tuple[float, str]]]]) -> Any:
    """``[(metric, [(unix_s, "value"), ...]), ...]`` as a ``matrix`` result."""
    result = [{"metric": m, "values": [[t, v] for t, v in points]} for m, points in series]
    return {"resultType": "matrix", "result": result, "stats": {}}


def vector_data(series: Sequence[tuple[dict[str, str], tuple[float, str]]]) -> Any:
    result = [{"metric": m, "value": [t, v]} for m, (t, v) in series]
    return {"resultType": "vector", "result": result, "stats": {}}


def tempo_json(spans: Sequence[SpanRecord], *, shape: str = "batches") -> dict[str, Any]:
    """Tempo's trace-by-id JSON of ``spans``: ``{"batches": [...]}`` (``/api/traces``) or
    ``{"trace": {"resourceSpans": [...]}}`` (``/api/v2/traces``), one batch per resource."""
    batches: dict[str, dict[str, Any]] = {}
    for span in spans:
        resource = {"service.name": span.service, **span.resource}
        key = json.dumps(resource, sort_keys=True)
        batch = batches.setdefault(
            key,
            {
                "resource": {"attributes": _attributes(resource)},
                "scopeSpans": [{"scope": {"name": "bfm"}, "spans": []}],
            },
        )
        batch["scopeSpans"][0]["spans"].append(_span_json(span))
    if shape == "batches":
        return {"batches": list(batches.values())}
    return {"trace": {"resourceSpans": list(batches.values())}}


def _span_json(span: SpanRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "traceId": _b64(span.trace_id),
        "spanId": _b64(span.span_id),
        "name": span.name,
        "kind": f"SPAN_KIND_{span.kind.upper()}",
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": _attributes(span.attributes),
        "status": {},
    }
    if span.parent_span_id:
        doc["parentSpanId"] = _b64(span.parent_span_id)
    if span.status != "unset":
        doc["status"] = {"code": f"STATUS_CODE_{span.status.upper()}"}
        if span.status_message:
            doc["status"]["message"] = span.status_message
    if span.events:
        doc["events"] = [
            {"timeUnixNano": str(e.ts_ns), "name": e.name, "attributes": _attributes(e.attributes)}
            for e in span.events
        ]
    if span.links:
        doc["links"] = [
            {
                "traceId": _b64(link.trace_id),
                "spanId": _b64(link.span_id),
                "attributes": _attributes(link.attributes),
            }
            for link in span.links
        ]
    return doc


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    out = []
    for key, value in attributes.items():
        typed: dict[str, Any]
        if isinstance(value, bool):
            typed = {"boolValue": value}
        elif isinstance(value, int):
            typed = {"intValue": str(value)}  # int64 is a string in protobuf JSON
        elif isinstance(value, float):
            typed = {"doubleValue": value}
        else:
            typed = {"stringValue": str(value)}
        out.append({"key": key, "value": typed})
    return out
