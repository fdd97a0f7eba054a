"""JSON log lines: one object per record, with the trace and span ids of the work that
logged it, so a line leads to its trace (ARCHITECTURE.md section 5). Secrets are
redacted from the message, the extra fields and the exception (``bfm_observe.redaction``)
before the line reaches any handler's output (stderr, Loki)."""

from __future__ import annotations

import json
import logging
import time
from typing import IO, Any

from opentelemetry import trace

from bfm_observe.redaction import redact_text, redact_value

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_CORE = ("ts", "level", "logger", "msg", "trace_id", "span_id", "error")
# ``site`` and ``component`` default to the process's own; a record that names its own
# (a site process's line about one component's decision) keeps them: the line is about
# that component, and readers (the run checker, Loki queries) rely on it. The Loki
# labels stay the process's.


def _hex(value: object, width: int) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:0{width}x}" if value else None
    return str(value) if value else None


def trace_ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """(trace_id, span_id): those the caller passed with ``extra=``, else the current
    span's when it is valid (call this on the logging thread)."""
    trace_id = _hex(getattr(record, "trace_id", None), 32)
    span_id = _hex(getattr(record, "span_id", None), 16)
    if trace_id is None:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    return trace_id, span_id


def rfc3339_ms(created: float) -> str:
    """``2024-05-01T12:00:00.123Z`` (UTC, milliseconds)."""
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "site", "component", "trace_id", "span_id",
    ...extra, "error"}``; ids are left out when there are none; ``site`` and
    ``component`` are the process's unless the record gives its own (``extra=``)."""

    def __init__(self, site: str, component: str) -> None:
        super().__init__()
        self.site = site
        self.component = component

    def document(self, record: logging.LogRecord) -> dict[str, Any]:
        trace_id, span_id = trace_ids(record)
        doc: dict[str, Any] = {
            "ts": rfc3339_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
            "site": self.site,
            "component": self.component,
        }
        if trace_id:
            doc["trace_id"] = trace_id
        if span_id:
            doc["span_id"] = span_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _CORE:
                doc[key] = redact_value(key, value)
        if record.exc_info:
            doc["error"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["error"] = redact_text(record.exc_text)
        return doc

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.document(record), default=str)


class BfmStreamHandler(logging.StreamHandler[IO[str]]):
    """The one stream handler ``configure`` puts on the root logger (a class of its own so
    ``shutdown`` and a second ``configure`` recognise it)."""
