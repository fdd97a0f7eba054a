"""The log store's own metrics and its log of refused requests (SECURITY.md, "Hostile
input"): every answered request is counted in ``bfm_logstore_requests_total{op,
outcome}`` (``site`` is the store's, ``component`` = ``logstore``), served at
``/metrics``; refusals (4xx) and failures (5xx) are also logged, at most once per
``LOG_EVERY_S`` per operation and outcome, with how many there were and the last
reason, so a flood of bad pushes cannot flood the logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, generate_latest

from bfm_observe.ratelog import Summarized

log = logging.getLogger("bfm.logstore")

COMPONENT = "logstore"
LOG_EVERY_S = 10.0
REQUESTS = Counter(
    "bfm_logstore_requests",
    "Requests the log store answered, by operation and outcome.",
    ("site", "component", "op", "outcome"),
)
_OPS = {
    "/loki/api/v1/push": "push",
    "/otlp/v1/logs": "otlp_logs",
    "/v1/traces": "otlp_traces",
    "/loki/api/v1/query": "query",
    "/loki/api/v1/query_range": "query_range",
    "/loki/api/v1/labels": "labels",
    "/loki/api/v1/label": "labels",
    "/loki/api/v1/series": "series",
    "/ready": "ready",
    "/metrics": "metrics",
}
_OUTCOMES = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    411: "bad-request",
    413: "too-large",
    503: "unavailable",
    507: "disk-full",
}


def op_of(path: str) -> str:
    """A bounded name for the endpoint of ``path``."""
    if path.startswith("/api/traces/"):
        return "trace"
    if path.startswith("/loki/api/v1/label/"):
        return "label_values"
    return _OPS.get(path.rstrip("/") or "/", "other")


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return _OUTCOMES.get(status, "error" if status >= 500 else "bad-request")


def exposition() -> bytes:
    """The process's metrics in Prometheus's text format."""
    return generate_latest(REGISTRY)


class RequestLog:
    """Counts each answer and logs refusals, summarized per (op, outcome)."""

    def __init__(self, site: str = "", monotonic: Callable[[], float] = time.monotonic) -> None:
        self.site = site
        self._log = Summarized(log, LOG_EVERY_S, monotonic)

    def answered(self, path: str, status: int, reason: str = "") -> None:
        op, outcome = op_of(path), outcome_of(status)
        REQUESTS.labels(self.site, COMPONENT, op, outcome).inc()
        if outcome in ("ok", "not-found"):
            return
        self._log.note(
            f"{op}:{outcome}",
            f"log store {op} request(s) {outcome} (HTTP {status})",
            reason,
            event="logstore_refused",
            op=op,
            outcome=outcome,
        )
