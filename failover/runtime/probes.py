"""Liveness of a site's components, probed in the background by an application-level ping.

A TCP connect is not enough (a paused process's kernel still accepts connections): each
component must answer ``{"ping": true}`` with ``{"pong": true}`` within ``timeout_s``.
Results are kept per component and read without blocking by the site agent's probe.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping


def ping(address: tuple[str, int], *, timeout_s: float) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(b'{"ping": true}\n')
            answer = conn.recv(256)
        return json.loads(answer.split(b"\n", 1)[0]).get("pong") is True
    except (OSError, ValueError, AttributeError):
        return False


class ComponentProbes:
    """One thread per component, pinging it every ``interval_s``."""

    def __init__(
        self,
        addresses: Mapping[str, tuple[str, int]],
        *,
        interval_s: float = 0.1,
        timeout_s: float = 0.1,
    ) -> None:
        self.addresses = dict(addresses)
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._alive = dict.fromkeys(self.addresses, False)
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
        return self._alive.get(component, True)

    def _loop(self, component: str) -> None:
        address = self.addresses[component]
        while not self._stop.is_set():
            self._alive[component] = ping(address, timeout_s=self.timeout_s)
            self._stop.wait(self.interval_s)
