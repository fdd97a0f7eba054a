"""A double of Loki's push API: a real HTTP server on 127.0.0.1 taking
``POST /loki/api/v1/push`` (JSON, optionally gzip), checking the body's shape as Loki
does (streams of labels + ``[ns, line]`` or ``[ns, line, {metadata}]`` values) and keeping
every entry. ``mode="hang"`` accepts connections and never answers (until closed);
``mode="fail"`` answers 500. ``closed_port_url()`` names a port nobody listens on.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

PUSH_PATH = "/loki/api/v1/push"


@dataclass(frozen=True)
class LokiEntry:
    labels: dict[str, str]
    ts_ns: int
    line: str
    metadata: dict[str, str] | None  # the optional third element of a value


def _str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def parse_push(doc: Any) -> list[LokiEntry]:
    """The entries of a push body; ValueError when its shape is not what Loki accepts."""
    if not isinstance(doc, dict) or not isinstance(doc.get("streams"), list):
        raise ValueError("body must be {'streams': [...]}")
    entries: list[LokiEntry] = []
    for stream in doc["streams"]:
        labels = stream.get("stream") if isinstance(stream, dict) else None
        if not _str_dict(labels) or not labels:
            raise ValueError(f"stream labels must be a non-empty str->str map: {stream!r}")
        values = stream.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError(f"values must be a non-empty list: {stream!r}")
        for value in values:
            if not isinstance(value, list) or len(value) not in (2, 3):
                raise ValueError(f"a value is [ns, line] or [ns, line, metadata]: {value!r}")
            ts, line = value[0], value[1]
            if not (isinstance(ts, str) and ts.isdigit() and isinstance(line, str)):
                raise ValueError(f"timestamp must be a string of ns, line a string: {value!r}")
            metadata = value[2] if len(value) == 3 else None
            if metadata is not None and not _str_dict(metadata):
                raise ValueError(f"structured metadata must be a str->str map: {value!r}")
            entries.append(LokiEntry(dict(labels), int(ts), line, metadata))
    return entries


class LokiReceiver:
    """Loki double: ``url`` is the base URL (push to ``url + /loki/api/v1/push``)."""

    def __init__(self, mode: Literal["ok", "hang", "fail"] = "ok") -> None:
        self.mode = mode
        self._entries: list[LokiEntry] = []
        self.pushes = 0  # accepted push requests
        self.connections_seen = 0  # push requests received, answered or not
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._cond:
                    receiver.connections_seen += 1
                    receiver._cond.notify_all()
                if receiver.mode == "hang":
                    receiver._release.wait()
                    return
                if receiver.mode == "fail" or self.path != PUSH_PATH:
                    self.send_error(500 if receiver.mode == "fail" else 404)
                    return
                try:
                    if self.headers.get("Content-Encoding", "").lower() == "gzip":
                        body = gzip.decompress(body)
                    entries = parse_push(json.loads(body))
                except ValueError as exc:  # json errors are ValueErrors too
                    with receiver._cond:
                        receiver.errors.append(str(exc))
                    self.send_error(400, str(exc))
                    return
                with receiver._cond:
                    receiver.pushes += 1
                    receiver._entries.extend(entries)
                    receiver._cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> LokiReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._release.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def entries(self) -> list[LokiEntry]:
        with self._cond:
            return list(self._entries)

    def wait_connections(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until ``count`` push requests arrived (answered or not)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.connections_seen >= count, timeout_s):
                raise TimeoutError(f"{self.connections_seen} requests within {timeout_s} s")

    def wait_for(
        self, predicate: Callable[[list[LokiEntry]], Any], timeout_s: float = 5.0
    ) -> list[LokiEntry]:
        """Wait (bounded) until ``predicate(entries)`` holds; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(list(self._entries)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no match within {timeout_s} s; {len(self._entries)} entries, "
                        f"errors {self.errors}"
                    )
                self._cond.wait(left)
            return list(self._entries)


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 whose port was just free (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
