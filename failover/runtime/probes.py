"""Liveness of a site's components, probed in the background by an application-level ping.

A TCP connect is not enough (a paused process's kernel still accepts connections): each
component must answer ``{"ping": true}`` with ``{"pong": true}`` within ``timeout_s``.
Results are kept per component and read without blocking by the site agent's probe.

A refused connection means nobody listens any more: the process is gone (``exited``), and
the agent takes it down at once. A ping that is not answered in time may be a paused or
hung process, or only a busy one on a loaded host: the agent's detector waits for several
in a row before it takes the component down (``DetectorTiming.down_after_failures``).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping

OK, REFUSED, UNANSWERED = "ok", "refused", "unanswered"
PROBE_TIMEOUT_S = 0.25
"""How long a component has to answer a ping. 0.1 s was too short on a saturated 2-core
host (three etcd members and twenty processes in the partition runs): busy routers missed
three pings in a row, were taken down, and their shards moved back and forth. A hung
component is now down after about a second (three misses, probes every 0.1 s)."""


def ping_state(address: tuple[str, int], *, timeout_s: float) -> str:
    """``ok``, ``refused`` (nothing listens: the process is gone) or ``unanswered``."""
    try:
        with socket.create_connection(address, timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(b'{"ping": true}\n')
            answer = conn.recv(256)
        return OK if json.loads(answer.split(b"\n", 1)[0]).get("pong") is True else UNANSWERED
    except ConnectionRefusedError:
        return REFUSED
    except (OSError, ValueError, AttributeError):
        return UNANSWERED


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
    ) -> None:
        self.addresses = dict(addresses)
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._state = dict.fromkeys(self.addresses, REFUSED)
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

    def _loop(self, component: str) -> None:
        address = self.addresses[component]
        while not self._stop.is_set():
            self._state[component] = ping_state(address, timeout_s=self.timeout_s)
            self._stop.wait(self.interval_s)
