"""The sites' direct heartbeats (``failover.runtime.heartbeats``) over real UDP on
127.0.0.1: answered pings are reported; with a shared key every datagram is
authenticated, and one without the right MAC, or a pong that does not answer the ping's
nonce, is dropped and counted (SECURITY.md)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from failover.runtime.heartbeats import (
    HEARTBEAT_KEY_ENV,
    HeartbeatChannel,
    Peer,
    heartbeat_key,
)

WAIT_S = 5.0  # a ceiling that catches a hang
KEY = b"k" * 32


class Reports:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, site: str, store_ok: bool, sent_s: float) -> None:
        self.seen.append((site, store_ok))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def pair(
    key_a: bytes | None, key_b: bytes | None
) -> Iterator[tuple[HeartbeatChannel, HeartbeatChannel, Reports]]:
    """Sites a and b, each pinging the other; a's reports of b are returned."""
    ports = {"a": _free_udp_port(), "b": _free_udp_port()}
    reports = Reports()
    with ExitStack() as stack:
        channels = {}
        for site, key in (("a", key_a), ("b", key_b)):
            other = "b" if site == "a" else "a"
            channel = HeartbeatChannel(
                site,
                bind=("127.0.0.1", ports[site]),
                peers={other: Peer(other, "127.0.0.1", ports[other])},
                store_ok=lambda: True,
                on_report=reports if site == "a" else (lambda *_: None),
                monotonic=time.monotonic,
                key=key,
            )
            channel.start()
            stack.callback(channel.close)
            channels[site] = channel
        yield channels["a"], channels["b"], reports


def _ping_until(a: HeartbeatChannel, done: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not (callable(done) and done()):
        a.ping_all()
        time.sleep(0.05)


def test_answered_pings_are_reported_with_and_without_a_key() -> None:
    for key in (None, KEY):
        with pair(key, key) as (a, _, reports):
            _ping_until(a, lambda: reports.seen)
            assert reports.seen and reports.seen[0] == ("b", True)


def test_a_peer_without_the_key_or_with_another_is_not_believed() -> None:
    for key_b in (None, b"x" * 32):
        with pair(KEY, key_b) as (a, b, reports):
            _ping_until(a, lambda: a.dropped + b.dropped > 3)
            time.sleep(0.2)
            assert reports.seen == [], "a pong without the right MAC was believed"
            # b drops a's pings when its key differs; a drops b's pongs when b has none
            assert a.dropped + b.dropped > 3


def test_a_forged_or_replayed_pong_is_dropped() -> None:
    with pair(KEY, KEY) as (a, _, reports):
        _ping_until(a, lambda: reports.seen)
        seen = len(reports.seen)
        dropped = a.dropped
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            forged = {"type": "pong", "seq": 1, "site": "b", "store_ok": True, "nonce": "00"}
            attacker.sendto(json.dumps(forged).encode(), a.address)  # no MAC
            time.sleep(0.3)
        assert len(reports.seen) == seen
        assert a.dropped == dropped + 1


def test_the_key_file_must_be_readable_and_long_enough(tmp_path: Path) -> None:
    assert heartbeat_key({}) is None
    with pytest.raises(ValueError, match="cannot read it"):
        heartbeat_key({HEARTBEAT_KEY_ENV: str(tmp_path / "missing")})
    short = tmp_path / "short.key"
    short.write_text("abc")
    with pytest.raises(ValueError, match="at least 16"):
        heartbeat_key({HEARTBEAT_KEY_ENV: str(short)})
    good = tmp_path / "good.key"
    good.write_text("ab" * 32 + "\n")
    assert heartbeat_key({HEARTBEAT_KEY_ENV: str(good)}) == b"ab" * 32
