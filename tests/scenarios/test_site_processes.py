"""Three real `bfm site run` processes on one sqlite store: placement, kill -9, return.

Real subprocesses, a real sqlite file, real UDP heartbeats on 127.0.0.1. Times are only
bounded by generous ceilings (the benchmarks measure them); correctness is asserted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from failover.adapters.sqlite_store import SqliteStore
from failover.core.fencing import Ownership
from failover.core.topology import DEFAULT_COMPONENTS
from failover.runtime.documents import ownership_key

SHARDS = 4
HANG_CEILING_S = 60.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sites:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "bfm.db"
        self.ports = {site: _free_udp_port() for site in ("a", "b", "w")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.store = SqliteStore(self.db)

    def start(self, site: str) -> None:
        peers = [f"--peer={p}=127.0.0.1:{port}" for p, port in self.ports.items() if p != site]
        log = open(self.tmp / f"{site}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[site] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "failover",
                "site",
                "run",
                f"--site={site}",
                f"--store=sqlite:///{self.db}",
                f"--listen=127.0.0.1:{self.ports[site]}",
                f"--shards={SHARDS}",
                *peers,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    def kill9(self, site: str) -> None:
        proc = self.procs.pop(site)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for site, proc in list(self.procs.items()):
            try:
                codes[site] = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[site] = proc.wait(timeout=10)
        self.procs.clear()
        self.store.close()
        return codes

    def owners(self) -> dict[str, list[str | None]]:
        result = {}
        for c in DEFAULT_COMPONENTS:
            got = self.store.get(ownership_key(c))
            if got is not None:
                result[c] = [a.owner for a in Ownership.from_doc(got.value).shards]
        return result

    def epochs(self) -> dict[str, list[int]]:
        result = {}
        for c in DEFAULT_COMPONENTS:
            got = self.store.get(ownership_key(c))
            if got is not None:
                result[c] = [a.epoch for a in Ownership.from_doc(got.value).shards]
        return result


def wait_until(check: Callable[[], bool], what: str, *, ceiling_s: float = HANG_CEILING_S) -> float:
    start = time.monotonic()
    while time.monotonic() - start < ceiling_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {ceiling_s} s: {what}")


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    s = Sites(tmp_path)
    try:
        yield s
    finally:
        for proc in s.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def even(owners: dict[str, list[str | None]]) -> bool:
    return len(owners) == len(DEFAULT_COMPONENTS) and all(
        sorted(o) == ["a"] * (SHARDS // 2) + ["b"] * (SHARDS // 2) for o in owners.values()
    )


def test_sites_place_fail_over_and_hand_back(sites: Sites) -> None:
    for site in ("a", "b", "w"):
        sites.start(site)
    wait_until(lambda: even(sites.owners()), "even placement after start")
    before = sites.epochs()

    sites.kill9("a")
    took_s = wait_until(
        lambda: all(set(o) == {"b"} for o in sites.owners().values()), "b owns everything"
    )
    after = sites.epochs()
    for c, owners in sites.owners().items():
        for i, _ in enumerate(owners):
            assert after[c][i] >= before[c][i]
    print(f"site a killed: b owned every shard after {took_s:.2f} s")

    sites.start("a")
    wait_until(lambda: even(sites.owners()), "even again after a returned (hold-off 10 s)")
    final = sites.epochs()
    for c in final:
        assert all(f >= a for f, a in zip(final[c], after[c], strict=True))
    codes = sites.stop_all()
    assert codes == {"a": 0, "b": 0, "w": 0}
    for site in ("a", "b", "w"):
        log = (sites.tmp / f"{site}.log").read_text()
        assert '"event": "started"' in log
        assert "Traceback" not in log
