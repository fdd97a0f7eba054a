"""Liveness of a site's components, probed in the background by an application-level ping.

A TCP connect is not enough (a paused process's kernel still accepts connections): each
component must answer ``{"ping": true}`` with one line ``{"pong": true, ...}`` within
``timeout_s``. Results are kept per component and read without blocking by the site
agent's probe.

The reference components' pong carries their version and counters
(``{"pong": true, "health": <ComponentHealth.to_doc()>}``); ``ComponentProbes.health``
keeps the last valid one per component. A pong without health, or with a malformed one,
still counts as alive: liveness never depends on the health report.

A refused connection means nobody listens any more: the process is gone (``exited``), and
the agent takes it down at once. A ping that is not answered in time may be a paused or
hung process, or only a busy one on a loaded host: the agent's detector waits for several
in a row before it takes the component down (``DetectorTiming.down_after_failures``).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Mapping

from failover.adapters.tls import wrap_client
from failover.core.versions import ComponentHealth

OK, REFUSED, UNANSWERED = "ok", "refused", "unanswered"
PROBE_TIMEOUT_S = 0.25
"""How long a component has to answer a ping. 0.1 s was too short on a saturated 2-core
host (three etcd members and twenty processes in the partition runs): busy routers missed
three pings in a row, were taken down, and their shards moved back and forth. A hung
component is now down after about a second (three misses, probes every 0.1 s)."""
MAX_ANSWER_BYTES = 8 * 1024
"""The longest answer line read; a pong with its health is a few hundred bytes."""


def ping_answer(
    address: tuple[str, int], *, timeout_s: float, tls: ssl.SSLContext | None = None
) -> tuple[str, ComponentHealth | None]:
    """(``ok``, ``refused`` or ``unanswered``; the health the pong carried, or None when it
    carried none or a malformed one). ``timeout_s`` bounds the connect, then the answer."""
    try:
        with wrap_client(
            socket.create_connection(address, timeout=timeout_s), tls, address[0]
        ) as conn:
            conn.sendall(b'{"ping": true}\n')
            answer = json.loads(_read_line(conn, timeout_s=timeout_s))
    except ConnectionRefusedError:
        return REFUSED, None
    except (OSError, ValueError):
        return UNANSWERED, None
    if not isinstance(answer, dict) or answer.get("pong") is not True:
        return UNANSWERED, None
    return OK, _health_of(answer.get("health"))


def ping_state(address: tuple[str, int], *, timeout_s: float) -> str:
    """``ok``, ``refused`` (nothing listens: the process is gone) or ``unanswered``."""
    return ping_answer(address, timeout_s=timeout_s)[0]


def _read_line(conn: socket.socket, *, timeout_s: float) -> bytes:
    """The first line of the answer (without its newline), read within ``timeout_s``;
    ValueError when none ends within ``MAX_ANSWER_BYTES``. A peer that closes after part
    of a line gives that part (which then fails to parse)."""
    deadline_s = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data:
        if len(data) > MAX_ANSWER_BYTES:
            raise ValueError(f"no answer line within {MAX_ANSWER_BYTES} bytes")
        remaining_s = deadline_s - time.monotonic()
        if remaining_s <= 0:
            raise TimeoutError(f"no whole answer line in {timeout_s} s")
        conn.settimeout(remaining_s)
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _health_of(doc: object) -> ComponentHealth | None:
    if not isinstance(doc, Mapping):
        return None  # none reported (or not an object): alive all the same
    try:
        return ComponentHealth.from_doc(doc)
    except (ValueError, TypeError, KeyError):  # a bad report must not cost the liveness
        return None


def ping(address: tuple[str, int], *, timeout_s: float) -> bool:
    return ping_state(address, timeout_s=timeout_s) == OK


class ComponentProbes:
    """One thread per component, pinging it every ``interval_s``."""

    def __init__(
        self,
        addresses: Mapping[str, tuple[str, int]],
        *,
        interval_s: float = 0.1,
        timeout_s: float = PROBE_TIMEOUT_S,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: ping over TLS (the components listen with it: ``failover.adapters.tls``)."""
        self.addresses = dict(addresses)
        self.tls = tls
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._state = dict.fromkeys(self.addresses, REFUSED)
        self._health: dict[str, ComponentHealth] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(c,), name=f"probe-{c}", daemon=True)
            for c in self.addresses
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def alive(self, component: str) -> bool:
        """The last answer; a component without an address counts as alive (not managed)."""
        return self._state.get(component, OK) == OK

    def exited(self, component: str) -> bool:
        """Whether the last ping found nobody listening (the process is gone)."""
        return self._state.get(component, OK) == REFUSED

    def health(self, component: str) -> ComponentHealth | None:
        """The last valid health the component's pong carried (its version and counters),
        None until one came. It is kept when later pongs carry none or a malformed one, and
        when the component stops answering: read ``alive`` for whether it runs now."""
        return self._health.get(component)

    def _loop(self, component: str) -> None:
        address = self.addresses[component]
        while not self._stop.is_set():
            state, health = ping_answer(address, timeout_s=self.timeout_s, tls=self.tls)
            if health is not None:
                self._health[component] = health
            self._state[component] = state
            self._stop.wait(self.interval_s)
