"""Direct heartbeats between site agents over UDP on the site LAN (the failsafe's channel).

Ping/pong: an agent pings each peer with its own store status; the peer answers with its
status and the ping's sequence number. A peer's report counts from the moment *this* agent
sent the ping that was answered, on this agent's monotonic clock, so a report that waited
in a socket buffer (a paused process, a slow link) is never taken for a fresh one.
Datagrams that are not well-formed are dropped and counted.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_DATAGRAM_BYTES = 512
PENDING_PINGS_KEPT = 64


@dataclass(frozen=True)
class Peer:
    site: str
    host: str
    port: int


def parse_peer(text: str) -> Peer:
    """``b=127.0.0.1:7002`` -> Peer; ValueError naming the text and the form otherwise."""
    site, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not (sep and colon and site and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"peer {text!r} is not SITE=HOST:PORT, e.g. b=127.0.0.1:7002")
    return Peer(site.lower(), host, int(port))


class HeartbeatChannel:
    """Sends pings to peers, answers theirs, and reports answered pings to ``on_report``."""

    def __init__(
        self,
        site: str,
        *,
        bind: tuple[str, int],
        peers: Mapping[str, Peer],
        store_ok: Callable[[], bool],
        on_report: Callable[[str, bool, float], None],
        monotonic: Callable[[], float],
    ) -> None:
        self.site = site
        self.peers = dict(peers)
        self._store_ok, self._on_report, self._monotonic = store_ok, on_report, monotonic
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(bind)
        self._sock.settimeout(0.2)
        self._seq = 0
        self._sent: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._receive, name=f"heartbeats-{site}", daemon=True
        )
        self.dropped = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop answering and close the socket (also when never started)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=2.0)
        self._sock.close()

    def ping_all(self) -> None:
        """One ping to every peer (call every ``heartbeat_interval_s``)."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._sent[seq] = self._monotonic()
            for old in [s for s in self._sent if s <= seq - PENDING_PINGS_KEPT]:
                del self._sent[old]
        data = self._encode({"type": "ping", "seq": seq})
        for peer in self.peers.values():
            with contextlib.suppress(OSError):  # unreachable: the missing answer is the signal
                self._sock.sendto(data, (peer.host, peer.port))

    def _encode(self, message: dict[str, object]) -> bytes:
        message.update({"site": self.site, "store_ok": self._store_ok()})
        return json.dumps(message, separators=(",", ":")).encode()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self._sock.recvfrom(MAX_DATAGRAM_BYTES)
            except TimeoutError:
                continue
            except OSError:
                return
            self._handle(data, sender)

    def _handle(self, data: bytes, sender: tuple[str, int]) -> None:
        try:
            message = json.loads(data)
            kind, site, seq = message["type"], message["site"], message["seq"]
            store_ok = message["store_ok"]
            if site not in self.peers or not isinstance(seq, int) or not isinstance(store_ok, bool):
                raise ValueError("unknown peer or malformed fields")
        except (ValueError, KeyError, TypeError):
            self.dropped += 1
            return
        if kind == "ping":
            with contextlib.suppress(OSError):
                self._sock.sendto(self._encode({"type": "pong", "seq": seq}), sender)
        elif kind == "pong":
            with self._lock:
                sent_s = self._sent.get(seq)
            if sent_s is not None:
                self._on_report(site, store_ok, sent_s)
        else:
            self.dropped += 1
