"""A site's grants over HTTP, for components that do not share the site agent's host.

The grants file (:mod:`failover.runtime.grants`) says until when a grant holds on the
host's monotonic clock, which only processes of that host share. Pods of one site may run
on other nodes (or in other PID and mount namespaces), so the site process can also serve
the grants: ``GET /grants`` answers the grants with how long they still hold,
``valid_for_s``, instead of a moment. A component asks every ``interval_s`` and counts that
time from the moment it *sent* the request, on its own monotonic clock: the answer was
computed after that, so the grant runs out for the component no later than for the agent,
however long the answer took (clock rates differ by far less than the margins).

If the site process stops answering (crash, pause, cut off), the component keeps the last
grants until they run out by themselves: the self-fence reaches the pods as it reaches
local processes. Where the backbone has TLS (``BFM_TLS_*``, ``failover.adapters.tls``),
the grants go over mutual TLS as well (``https://``): a listener that is not a site of
the same CA cannot hand out grants, and no one else can read them; a process never falls
back to plain HTTP by itself. ``bfm site run --grants-listen HOST:PORT`` serves them;
``bfm component run --grants-url URL`` (or ``BFM_GRANTS_URL``) reads them
(docs/kubernetes.md).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from failover.runtime.grants import NO_GRANTS, Grants
from failover.runtime.listening import listen_error

GRANTS_PATH = "/grants"
GRANTS_URL_ENV = "BFM_GRANTS_URL"
FETCH_INTERVAL_S = 0.1
"""How often a component asks (the agent renews the grants every poll, 0.1 s)."""
FETCH_TIMEOUT_S = 1.0
IDLE_S = 30.0
"""How long the server keeps a silent connection open."""

log = logging.getLogger("bfm.grants")


def to_wire(grants: Grants, now_mono_s: float) -> bytes:
    """The answer to ``GET /grants``: the grants with ``valid_for_s`` left at ``now``."""
    data = grants.to_doc()
    del data["valid_until_mono_s"]  # a moment on this host's clock only: meaningless there
    data["valid_for_s"] = max(0.0, grants.valid_until_mono_s - now_mono_s)
    return json.dumps(data).encode()


def from_wire(body: bytes, asked_at_mono_s: float) -> Grants:
    """The grants an answer names, valid until ``asked_at + valid_for_s`` on this host's
    clock; ValueError naming the problem when the answer is malformed."""
    try:
        data: Any = json.loads(body)
        valid_for_s = float(data["valid_for_s"])
        if not valid_for_s >= 0.0 or valid_for_s == float("inf"):
            raise ValueError(f"valid_for_s {valid_for_s} is not a finite duration")
        data["valid_until_mono_s"] = asked_at_mono_s + valid_for_s
        return Grants.from_doc(data)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"malformed grants answer ({err})") from None


def grants_url_problem(url: str, *, tls: bool) -> str | None:
    """What is wrong with ``url`` as a grants URL (None: nothing), ``tls``: whether the
    backbone's TLS is configured: then https, else http."""
    wanted = "https" if tls else "http"
    if url.startswith(f"{wanted}://"):
        return None
    why = (
        "TLS is configured (BFM_TLS_*), so the grants go over TLS too"
        if tls
        else "https needs the backbone's BFM_TLS_* certificates"
    )
    return f"the grants URL {url!r} must be {wanted}://: {why}"


class GrantsBoard:
    """The latest grants a site process published (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants = NO_GRANTS

    def publish(self, grants: Grants) -> None:
        with self._lock:
            self._grants = grants

    def current(self) -> Grants:
        with self._lock:
            return self._grants


class GrantsServer:
    """Serves a board's grants on ``GET /grants`` until ``close()``."""

    def __init__(
        self,
        board: GrantsBoard,
        *,
        bind: tuple[str, int],
        monotonic: Callable[[], float],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: a server context (``TlsFiles.server_context``: mutual TLS)."""
        self.board, self._monotonic = board, monotonic
        self.scheme = "https" if tls is not None else "http"

        server = self
        self._open: set[socket.socket] = set()  # kept-alive connections, closed by close()
        self._open_lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            # One kept-alive connection per component (ten questions a second); one that
            # says nothing for IDLE_S is let go.
            protocol_version = "HTTP/1.1"
            timeout = IDLE_S

            def setup(self) -> None:
                super().setup()
                with server._open_lock:
                    server._open.add(self.connection)

            def finish(self) -> None:
                with server._open_lock:
                    server._open.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != GRANTS_PATH:
                    self._answer(404, b'{"error": "not found: the grants are at /grants"}')
                    return
                self._answer(200, to_wire(server.board.current(), server._monotonic()))

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # ten requests a second per component: not worth a log line each

        try:
            self._http = ThreadingHTTPServer(bind, Handler)
        except OSError as err:
            raise listen_error(
                "the grants server", bind, err, "give --grants-listen a free port of this host"
            ) from None
        self._http.daemon_threads = True
        if tls is not None:  # the handshake happens in the request's thread, on first read
            self._http.socket = tls.wrap_socket(
                self._http.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        self._thread.start()
        log.info(
            "serving grants on %s://%s:%d%s",
            self.scheme,
            *self.address,
            GRANTS_PATH,
            extra={"event": "grants_serving"},
        )
        return self.address

    def close(self) -> None:
        """Stop answering, on the kept-alive connections too: their components see the
        site gone at once (and their grants run out), as if its process had ended."""
        self._http.shutdown()
        self._http.server_close()
        with self._open_lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5.0)


class GrantsFetcher:
    """A component's view of its site's grants, asked for every ``interval_s``."""

    def __init__(
        self,
        url: str,
        *,
        monotonic: Callable[[], float],
        interval_s: float = FETCH_INTERVAL_S,
        timeout_s: float = FETCH_TIMEOUT_S,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: a client context (``TlsFiles.client_context``); then ``url`` must be
        https, else http (ValueError naming the fix)."""
        problem = grants_url_problem(url, tls=tls is not None)
        if problem:
            raise ValueError(problem)
        self.url, self._monotonic = url, monotonic
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._lock = threading.Lock()
        self._grants = NO_GRANTS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fetches = 0
        self.errors = 0
        self._failing = False
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "", parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls = tls
        # one kept-alive connection (http.client: never through an environment's proxy,
        # the site is on the pod network); a new one after any error
        self._conn: http.client.HTTPConnection | None = None
        self._conn_lock = threading.Lock()

    def fetch_once(self) -> bool:
        """Ask once; True when an answer was taken (else the last grants stay, and run out
        by themselves)."""
        asked_at_s = self._monotonic()
        try:
            grants = from_wire(self._ask(), asked_at_s)
        except (OSError, ValueError, http.client.HTTPException) as err:
            self.errors += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    f"cannot read the site's grants from {self.url} ({err}); the last ones "
                    "hold until they run out (is the site process running and reachable?)",
                    extra={"event": "grants_unreachable", "url": self.url},
                )
            return False
        with self._lock:
            self._grants = grants
        self.fetches += 1
        if self._failing:
            self._failing = False
            log.info(f"reading the site's grants from {self.url} again")
        return True

    def _ask(self) -> bytes:
        """One ``GET`` on the kept-alive connection (opened when there is none)."""
        with self._conn_lock:
            if self._conn is None:
                self._conn = (
                    http.client.HTTPSConnection(
                        self._host, self._port, timeout=self.timeout_s, context=self._tls
                    )
                    if self._tls is not None
                    else http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
                )
            try:
                self._conn.request("GET", self._path, headers={"Accept": "application/json"})
                response = self._conn.getresponse()
                body = response.read()
            except BaseException:
                self._conn.close()
                self._conn = None
                raise
            if response.status != 200:
                raise OSError(f"HTTP {response.status} {response.reason}")
            return body

    def start(self) -> None:
        self.fetch_once()  # the first answer before the component admits anything
        self._thread = threading.Thread(target=self._run, name="grants-fetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.fetch_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def current(self) -> Grants:
        with self._lock:
            return self._grants

    def epoch(self, component: str, index: int) -> tuple[int, float] | None:
        """(epoch, valid until) to stamp on work for the shard, or None."""
        return self.current().grant(component, index, now_mono_s=self._monotonic())
