"""Direct heartbeats between site agents over UDP on the site LAN (the failsafe's channel).

Ping/pong: an agent pings each peer with its own store status; the peer answers with its
status and the ping's sequence number. A peer's report counts from the moment *this* agent
sent the ping that was answered, on this agent's monotonic clock, so a report that waited
in a socket buffer (a paused process, a slow link) is never taken for a fresh one.
Datagrams that are not well-formed are dropped and counted.

With a shared ``key`` (``BFM_HEARTBEAT_KEY_FILE``: the same secret file at every site;
``bfm demo --tls`` makes one), every datagram carries ``mac``, an HMAC-SHA256 over the
rest, and one whose MAC is missing or wrong is dropped and counted: nobody on the site LAN
can make a dead site look alive to its peer (the failsafe relies on what the heartbeats
say). A pong also answers the ping's random ``nonce``, so an old pong cannot be replayed
for a new ping.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from failover.runtime.listening import listen_error

MAX_DATAGRAM_BYTES = 512
PENDING_PINGS_KEPT = 64
HEARTBEAT_KEY_ENV = "BFM_HEARTBEAT_KEY_FILE"
MIN_KEY_BYTES = 16


def heartbeat_key(environ: Mapping[str, str]) -> bytes | None:
    """The shared heartbeat secret of ``$BFM_HEARTBEAT_KEY_FILE`` (None when not set);
    ValueError naming the file and the fix when it is unreadable or too short."""
    path = environ.get(HEARTBEAT_KEY_ENV, "").strip()
    if not path:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as err:
        raise ValueError(f"{HEARTBEAT_KEY_ENV}={path}: cannot read it ({err})") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"{HEARTBEAT_KEY_ENV}={path}: the key is {len(key)} bytes; give at least "
            f"{MIN_KEY_BYTES} random bytes (e.g. openssl rand -hex 32 > {path})"
        )
    return key


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
        key: bytes | None = None,
    ) -> None:
        """``key``: the shared secret that authenticates every datagram (module docstring)."""
        self.site, self.key = site, key
        self.peers = dict(peers)
        self._store_ok, self._on_report, self._monotonic = store_ok, on_report, monotonic
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind(bind)
        except OSError as err:
            self._sock.close()
            raise listen_error(
                "the heartbeats (UDP)", bind, err, "give --listen a free port of this host"
            ) from None
        self._sock.settimeout(0.2)
        self._seq = 0
        self._sent: dict[int, tuple[float, str]] = {}  # seq -> (sent at, nonce)
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
            seq, nonce = self._seq, secrets.token_hex(8)
            self._sent[seq] = (self._monotonic(), nonce)
            for old in [s for s in self._sent if s <= seq - PENDING_PINGS_KEPT]:
                del self._sent[old]
        data = self._encode({"type": "ping", "seq": seq, "nonce": nonce})
        for peer in self.peers.values():
            with contextlib.suppress(OSError):  # unreachable: the missing answer is the signal
                self._sock.sendto(data, (peer.host, peer.port))

    def _encode(self, message: dict[str, object]) -> bytes:
        message.update({"site": self.site, "store_ok": self._store_ok()})
        if self.key is not None:
            message["mac"] = self._mac(message)
        return json.dumps(message, separators=(",", ":")).encode()

    def _mac(self, message: Mapping[str, object]) -> str:
        assert self.key is not None
        body = json.dumps(
            {k: v for k, v in message.items() if k != "mac"}, sort_keys=True, separators=(",", ":")
        )
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()

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
            store_ok, nonce = message["store_ok"], message.get("nonce", "")
            if site not in self.peers or not isinstance(seq, int) or not isinstance(store_ok, bool):
                raise ValueError("unknown peer or malformed fields")
            if self.key is not None and not hmac.compare_digest(
                str(message.get("mac", "")), self._mac(message)
            ):
                raise ValueError("missing or wrong MAC")
        except (ValueError, KeyError, TypeError, AttributeError):
            self.dropped += 1
            return
        if kind == "ping":
            with contextlib.suppress(OSError):
                pong = {"type": "pong", "seq": seq, "nonce": str(nonce)}
                self._sock.sendto(self._encode(pong), sender)
        elif kind == "pong":
            with self._lock:
                sent = self._sent.get(seq)
            if sent is not None and hmac.compare_digest(str(nonce), sent[1]):
                self._on_report(site, store_ok, sent[0])
        else:
            self.dropped += 1
