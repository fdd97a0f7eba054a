"""The embedded log store's HTTP server: the part of Loki's API that BFM and Grafana's Loki
data source use, OTLP/HTTP logs at Loki's own path, OTLP/HTTP traces, and Tempo's
trace-by-id read API.

Endpoints (https://grafana.com/docs/loki/latest/reference/loki-http-api/):

- ``POST /loki/api/v1/push`` JSON (optionally gzip) or ``application/x-protobuf``
  (snappy-compressed ``logproto.PushRequest``) -> 204;
- ``POST /otlp/v1/logs`` (Loki's OTLP ingestion path) and ``POST /v1/traces`` (OTLP/HTTP),
  protobuf or JSON -> 200 with an empty export response;
- ``GET|POST /loki/api/v1/query_range``, ``query``, ``labels``, ``label/<name>/values``,
  ``series`` (``bfm_observe.logstore.http_api``);
- ``GET /api/traces/<trace id>`` -> Tempo's JSON (404 when the store has no span of it);
- ``GET /ready`` -> 200 ``ready``;
- ``GET /metrics`` -> the store's own metrics (``bfm_logstore_requests_total{op,
  outcome}``, ``bfm_observe.logstore.server_metrics``); refusals are also logged,
  rate-limited.

Authentication and tenants, as Loki: with a ``token``, every endpoint but ``/ready``
needs ``Authorization: Bearer <token>`` (401 otherwise; the comparison is constant-time).
With ``multi_tenant`` (Loki's ``auth_enabled: true``), every request names its tenant in
``X-Scope-OrgID`` (401 ``no org id`` otherwise) and sees only that tenant's data; without
it, all data is the tenant ``fake`` and the header is ignored.

Bodies over ``max_body_bytes`` get 413; a malformed body or query gets 400 naming the
problem; a full disk gets 507 and the lines are not acknowledged (the sender retries).
A background thread enforces retention every ``retention_interval_s``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from bfm_observe.logstore import http_api
from bfm_observe.logstore.records import DEFAULT_TENANT
from bfm_observe.logstore.server_metrics import RequestLog, exposition
from bfm_observe.logstore.store import LogStore, LogStoreError, StoreFull
from bfm_observe.logstore.wire_loki import (
    decode_loki_json,
    decode_loki_protobuf,
    decompress,
)
from bfm_observe.logstore.wire_otlp import decode_otlp_logs, decode_otlp_traces
from bfm_observe.logstore.wire_tempo import spans_to_tempo_json

log = logging.getLogger("bfm.logstore")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_TENANT = re.compile(r"^[A-Za-z0-9!\-_.*'()]{1,150}$")  # Loki's allowed tenant id characters
_TRACE_PATH = re.compile(r"^/api/traces/([0-9A-Fa-f]{1,32})$")
_LABEL_VALUES = re.compile(r"^/loki/api/v1/label/([^/]+)/values$")


class LogStoreServer:
    """``start()`` serves ``store`` on ``host:port`` (0: any free port) in threads."""

    def __init__(
        self,
        store: LogStore,
        *,
        host: str = "127.0.0.1",
        port: int = 3100,
        token: str | None = None,
        multi_tenant: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        retention_interval_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.token, self.multi_tenant = store, token or None, multi_tenant
        self.max_body_bytes, self.retention_interval_s = max_body_bytes, retention_interval_s
        self.wall_clock = wall_clock
        self.requests = RequestLog()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        serve = threading.Thread(
            target=self._httpd.serve_forever, name="logstore-http", daemon=True
        )
        keep = threading.Thread(target=self._retain, name="logstore-retention", daemon=True)
        self._threads = [serve, keep]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5.0)

    def _retain(self) -> None:
        while not self._stop.wait(self.retention_interval_s):
            try:
                result = self.store.enforce_retention()
            except LogStoreError as exc:
                log.warning("log store retention failed: %s", exc)
                continue
            if result.lines_deleted or result.spans_deleted:
                log.info(
                    "log store retention deleted %d line(s) and %d span(s) (%s)",
                    result.lines_deleted,
                    result.spans_deleted,
                    result.reason,
                )

    # --- request handling (called from the handler's thread) -------------------------

    def tenant_of(self, headers: Any) -> str:
        if not self.multi_tenant:
            return DEFAULT_TENANT
        tenant = (headers.get("X-Scope-OrgID") or "").strip()
        if not tenant:
            raise http_api.ApiError(401, "no org id")
        if not _TENANT.match(tenant) or tenant in (".", ".."):
            raise http_api.ApiError(400, f"tenant ID {tenant!r} contains unsupported characters")
        return tenant

    def authorize(self, headers: Any) -> None:
        if self.token is None:
            return
        given = headers.get("Authorization") or ""
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise http_api.ApiError(401, "unauthorized: send Authorization: Bearer <token>")

    def push(self, path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        tenant = self.tenant_of(headers)
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            plain = decompress(body, headers.get("Content-Encoding"))
            if path == "/loki/api/v1/push":
                # As Loki: JSON when it says so, else protobuf (snappy-compressed)
                if content_type == "application/json":
                    records = decode_loki_json(plain, tenant)
                else:
                    records = decode_loki_protobuf(plain, tenant)
                self.store.push(records)
                return 204, "text/plain", b""
            if path == "/otlp/v1/logs":
                received_ns = round(self.wall_clock() * 1e9)
                logs = decode_otlp_logs(plain, content_type, tenant, received_ns=received_ns)
                self.store.push(logs)
            else:
                spans = decode_otlp_traces(plain, content_type, tenant)
                self.store.push_spans(spans)
        except ValueError as exc:  # PushError, or what the store refuses (it stores none of it)
            raise http_api.ApiError(400, str(exc)) from None
        if content_type == "application/json":
            return 200, "application/json", b"{}"
        return 200, "application/x-protobuf", b""  # an empty Export*ServiceResponse

    def get(self, path: str, query: str, headers: Any) -> tuple[int, str, bytes]:
        tenant = self.tenant_of(headers)
        params = parse_qs(query, keep_blank_values=True)
        now_ns = round(self.wall_clock() * 1e9)
        if (match := _TRACE_PATH.match(path)) is not None:
            spans = self.store.trace(tenant, match.group(1).lower().rjust(32, "0"))
            if not spans:
                return 404, "text/plain", b"trace not found\n"
            return 200, "application/json", _json(spans_to_tempo_json(spans))
        if (match := _LABEL_VALUES.match(path)) is not None:
            name = unquote(match.group(1))
            return (
                200,
                "application/json",
                _json(http_api.label_values(self.store, tenant, name, params, now_ns)),
            )
        handler = http_api.QUERY_ROUTES.get(path.rstrip("/") if path != "/" else path)
        if handler is None:
            return 404, "text/plain", b"404 page not found\n"
        return 200, "application/json", _json(handler(self.store, tenant, params, now_ns))


_PUSH_PATHS = ("/loki/api/v1/push", "/otlp/v1/logs", "/v1/traces")


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _handler_for(server: LogStoreServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bfm-logstore"
        # Headers and body go out in separate writes: with Nagle's algorithm on, a
        # keep-alive client's delayed ACK would hold every answer back 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return  # requests are not logged line by line (the store is the log sink)

        def do_GET(self) -> None:
            self._answer(lambda path, query, _body: server.get(path, query, self.headers), False)

        def do_POST(self) -> None:
            def post(path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
                if path in _PUSH_PATHS:
                    return server.push(path, self.headers, body)
                # queries may come form-encoded in a POST body (Grafana does that)
                form = body.decode("utf-8", "replace")
                return server.get(path, "&".join(p for p in (query, form) if p), self.headers)

            self._answer(post, True)

        def _answer(
            self, act: Callable[[str, str, bytes], tuple[int, str, bytes]], body: bool
        ) -> None:
            parts = urlsplit(self.path)
            # A body left unread would be parsed as the next request: close after answering.
            asked_to_close = self.close_connection
            self.close_connection = body or asked_to_close
            try:
                if parts.path == "/ready":
                    self._send(200, "text/plain", b"ready\n")
                    return
                server.authorize(self.headers)
                if parts.path == "/metrics" and not body:
                    self._send(200, CONTENT_TYPE_LATEST, exposition())
                    server.requests.answered(parts.path, 200)
                    return
                payload = self._body() if body else b""
                self.close_connection = asked_to_close
                status, content_type, out = act(parts.path, parts.query, payload)
            except http_api.ApiError as exc:
                status, content_type, out = exc.status, "text/plain", exc.message.encode() + b"\n"
            except StoreFull as exc:
                status, content_type, out = 507, "text/plain", f"{exc}\n".encode()
            except LogStoreError as exc:
                status, content_type, out = 503, "text/plain", f"{exc}\n".encode()
            except Exception as exc:  # an HTTP server never dies of one request
                log.exception("log store request %s %s failed", self.command, parts.path)
                status, content_type, out = 500, "text/plain", f"internal error: {exc}\n".encode()
            self._send(status, content_type, out)
            reason = out.decode("utf-8", "replace") if status >= 400 else ""
            server.requests.answered(parts.path, status, reason)

        def _body(self) -> bytes:
            length_text = self.headers.get("Content-Length")
            if length_text is None:
                raise http_api.ApiError(411, "a Content-Length header is required")
            try:
                length = int(length_text)
            except ValueError:
                raise http_api.ApiError(400, f"bad Content-Length {length_text!r}") from None
            if length < 0:
                raise http_api.ApiError(400, f"bad Content-Length {length_text!r}")
            if length > server.max_body_bytes:
                raise http_api.ApiError(
                    413,
                    f"request body of {length} bytes is larger than the limit of "
                    f"{server.max_body_bytes} bytes; send smaller batches",
                )
            return self.rfile.read(length)

        def _send(self, status: int, content_type: str, out: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            if out and self.command != "HEAD":
                self.wfile.write(out)

    return Handler
