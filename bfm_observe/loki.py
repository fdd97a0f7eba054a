"""Shipping log lines to Loki without ever blocking the caller.

python-logging-loki posts one record per request, synchronously and without a timeout
(TOOLS.md): a Loki that accepts and never answers would hang every logging call. So its
emitter is extended to push batches whose values carry the trace and span ids as
structured metadata (the third element, never a label), and a handler puts formatted
lines on a bounded queue that one background thread drains: at most ~500 lines or 0.5 s
per push, connect/read timeouts, one retry, and every line it gives up on counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from logging_loki.emitter import LokiEmitterV1  # type: ignore[import-untyped]

from bfm_observe.logs import JsonFormatter, trace_ids
from bfm_observe.tracing import NAMESPACE

PUSH_PATH = "/loki/api/v1/push"
TIMEOUT_S = (1.0, 2.0)  # (connect, read)
BATCH_LINES = 500
BATCH_WAIT_S = 0.5
_NEVER_SHIP = ("urllib3", "requests")  # the shipper's own HTTP stack: no feedback loop


class Entry(NamedTuple):
    """One line to ship: its timestamp (ns, as a string), level label, line, metadata."""

    ts_ns: str
    level: str
    line: str
    metadata: dict[str, str]


def push_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(PUSH_PATH) else base + PUSH_PATH


def entry_of(record: logging.LogRecord, line: str) -> Entry:
    trace_id, span_id = trace_ids(record)
    metadata = {k: v for k, v in (("trace_id", trace_id), ("span_id", span_id)) if v}
    return Entry(str(int(record.created * 1e9)), record.levelname.lower(), line, metadata)


class BfmLokiEmitter(LokiEmitterV1):  # type: ignore[misc]
    """Loki push API v1 with labels {site, component, level, namespace} only and
    ``[ns, line, {trace_id, span_id}]`` values; several values per stream per push."""

    def __init__(self, url: str, labels: dict[str, str]) -> None:
        super().__init__(push_url(url), tags=dict(labels))

    def build_tags(self, record: logging.LogRecord) -> dict[str, str]:
        return {**self.tags, "level": record.levelname.lower()}

    def build_payload(self, record: logging.LogRecord, line: str) -> dict[str, Any]:
        return self.build_batch([entry_of(record, line)])

    def build_batch(self, entries: Sequence[Entry]) -> dict[str, Any]:
        streams: dict[str, list[list[Any]]] = {}
        for entry in entries:
            value: list[Any] = [entry.ts_ns, entry.line]
            if entry.metadata:
                value.append(entry.metadata)
            streams.setdefault(entry.level, []).append(value)
        return {
            "streams": [
                {"stream": {**self.tags, "level": level}, "values": values}
                for level, values in streams.items()
            ]
        }

    def push(self, entries: Sequence[Entry]) -> None:
        """One POST with a timeout; raises on a transport error or a non-2xx answer."""
        resp = self.session.post(self.url, json=self.build_batch(entries), timeout=TIMEOUT_S)
        if not 200 <= resp.status_code < 300:
            raise ValueError(f"Loki answered {resp.status_code}")


class LokiShipper(logging.Handler):
    """Formats on the caller's thread, queues (bounded), ships from one daemon thread."""

    def __init__(
        self,
        emitter: BfmLokiEmitter,
        formatter: logging.Formatter,
        *,
        queue_size: int = 10000,
        on_drop: Callable[[int], None] = lambda n: None,
        on_ship: Callable[[int], None] = lambda n: None,
    ) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.emitter = emitter
        self._queue: queue.Queue[Entry] = queue.Queue(maxsize=max(1, queue_size))
        self._on_drop, self._on_ship = on_drop, on_ship
        self._dropped = 0
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._flush_deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="bfm-loki-shipper", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self._dropped

    def _drop(self, count: int) -> None:
        if count:
            with self._count_lock:
                self._dropped += count
            self._on_drop(count)

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread.ident or record.name.startswith(_NEVER_SHIP):
            return
        if self._stop.is_set():
            self._drop(1)
            return
        try:
            entry = entry_of(record, self.format(record))
        except Exception:  # logging must not raise into the caller
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._drop(1)

    def _take_batch(self, first: Entry) -> list[Entry]:
        batch = [first]
        deadline = time.monotonic() + BATCH_WAIT_S
        while len(batch) < BATCH_LINES:
            wait = 0.0 if self._stop.is_set() else deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            if stopping and time.monotonic() >= self._flush_deadline:
                break
            try:
                first = self._queue.get_nowait() if stopping else self._queue.get(timeout=0.2)
            except queue.Empty:
                if stopping:
                    break
                continue
            self._send(self._take_batch(first))
        remaining = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            remaining += 1
        self._drop(remaining)
        self.emitter.close()

    def _send(self, batch: list[Entry]) -> None:
        for attempt in range(2):
            try:
                self.emitter.push(batch)
            except Exception:  # requests/Loki errors of any kind: retry once, then drop
                if attempt == 1 or (
                    self._stop.is_set() and time.monotonic() >= self._flush_deadline
                ):
                    break
                self._stop.wait(0.2)
            else:
                self._on_ship(len(batch))
                return
        self._drop(len(batch))

    def close(self, timeout_s: float = 3.0) -> None:
        """Push what is queued (waiting at most ``timeout_s``), then stop; lines still
        queued by then count as dropped."""
        if not self._stop.is_set():
            self._flush_deadline = time.monotonic() + timeout_s
            self._stop.set()
            self._thread.join(timeout=timeout_s + 0.5)
        super().close()


def ship_logger(
    logger_name: str, loki_url: str, *, site: str, component: str, queue_size: int = 1000
) -> LokiShipper:
    """Ship only ``logger_name``'s records to Loki (a short-lived command's, such as an
    operator's audit record: the process configures nothing else); ``close`` it before
    the process ends to flush."""
    labels = {"site": site, "component": component, "namespace": NAMESPACE}
    shipper = LokiShipper(
        BfmLokiEmitter(loki_url, labels), JsonFormatter(site, component), queue_size=queue_size
    )
    logging.getLogger(logger_name).addHandler(shipper)
    return shipper
