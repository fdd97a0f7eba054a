"""A double of the OpenTelemetry Collector's OTLP/HTTP traces receiver: a real HTTP server
on 127.0.0.1 that decodes ``POST /v1/traces`` (protobuf, optionally gzip) and keeps the
spans as plain dicts.

    with OtlpReceiver() as rx:
        bfm_observe.configure(..., otlp_endpoint=rx.url)
        ...
        span = rx.wait_for(lambda spans: any(s["name"] == "x" for s in spans), timeout_s=5)
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

Span = dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attrs(value.kvlist_value.values)
    return getattr(value, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def decode(body: bytes) -> list[Span]:
    """The spans of one ExportTraceServiceRequest, as dicts with hex ids."""
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[Span] = []
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                spans.append(
                    {
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex(),
                        "name": sp.name,
                        "kind": sp.kind,
                        "attributes": _attrs(sp.attributes),
                        "resource": resource,
                        "scope": ss.scope.name,
                        "events": [(ev.name, _attrs(ev.attributes)) for ev in sp.events],
                        "links": [
                            (ln.trace_id.hex(), ln.span_id.hex(), _attrs(ln.attributes))
                            for ln in sp.links
                        ],
                    }
                )
    return spans


class OtlpReceiver:
    """Collector double: ``url`` is the base URL (the exporter posts to ``url + /v1/traces``);
    ``spans()`` returns every span received so far; ``requests`` counts export calls."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._spans: list[Span] = []
        self._cond = threading.Condition()
        self.requests = 0
        self.errors: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                try:
                    if self.headers.get("Content-Encoding", "").lower() == "gzip":
                        body = gzip.decompress(body)
                    spans = decode(body)
                except Exception as exc:  # a bad request is a finding for the test
                    with receiver._cond:
                        receiver.errors.append(repr(exc))
                    self.send_error(400)
                    return
                with receiver._cond:
                    receiver.requests += 1
                    receiver._spans.extend(spans)
                    receiver._cond.notify_all()
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://{host}:{self._server.server_port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def spans(self) -> list[Span]:
        with self._cond:
            return list(self._spans)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()

    def wait_for(
        self, predicate: Callable[[list[Span]], Any], timeout_s: float = 5.0
    ) -> list[Span]:
        """Wait (bounded) until ``predicate(spans)`` is truthy; returns the spans then.
        Raises TimeoutError with what was received otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [s["name"] for s in self._spans]
                    raise TimeoutError(f"no match within {timeout_s} s; received {names}")
                self._cond.wait(left)
            return list(self._spans)
