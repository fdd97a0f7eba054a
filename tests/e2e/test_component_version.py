"""``bfm component run --version`` as real processes on 127.0.0.1: the site's liveness ping
reports the process's version and counters (router and module summed for the backbone),
the counters grow as messages go through the router, and a ``+fail-after-ready`` version
is alive on the ping but refuses every message with ``version-error``, also through the
router. The run directory is made by hand: endpoints, a SQLite store holding the
ownership documents, and site a's grants file (what the site agent would publish)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failover.adapters.sqlite_store import SqliteStore
from failover.core.fencing import Assignment, Ownership
from failover.core.topology import default_topology
from failover.core.versions import ComponentHealth
from failover.runtime.documents import ownership_key
from failover.runtime.grants import Grants, grants_path, publish
from failover.runtime.probes import OK, ping_answer
from failover.workload.endpoints import Endpoints, allocate
from failover.workload.envelope import Envelope
from failover.workload.launcher import wait_until
from failover.workload.ledger import Ledger

pytestmark = pytest.mark.e2e

SHARDS = 4
EPOCH = 1
READY_CEILING_S = 30.0
STOP_TIMEOUT_S = 15.0
MESSAGES = 12
BAD = "2.0.0+fail-after-ready"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Endpoints of a three-site run; backbone and eap of site a owned by a, granted."""
    run = tmp_path / "run"
    run.mkdir()
    endpoints = allocate(
        f"sqlite://{run / 'bfm.db'}", default_topology(shards_per_component=SHARDS)
    )
    endpoints.save(run)
    store = SqliteStore(run / "bfm.db")
    try:
        for component in ("backbone", "eap"):
            shards = tuple(Assignment("a", EPOCH) for _ in range(SHARDS))
            store.create(ownership_key(component), Ownership(component, shards, EPOCH).to_doc())
    finally:
        store.close()
    epochs = {(c, i): EPOCH for c in ("backbone", "eap") for i in range(SHARDS)}
    publish(grants_path(run, "a"), Grants("a", 1, time.monotonic() + 600.0, epochs))
    return run


def _start(run_dir: Path, component: str, version: str) -> subprocess.Popen[bytes]:
    """``bfm component run`` of site a, as the local platform starts it (stderr to a log)."""
    with (run_dir / f"component-{component}.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "failover",
                "component",
                "run",
                "--site=a",
                f"--component={component}",
                f"--run-dir={run_dir}",
                f"--version={version}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "BFM_TELEMETRY": "off"},
        )


@pytest.fixture
def processes(run_dir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs = {"backbone": _start(run_dir, "backbone", "2.0.0"), "eap": _start(run_dir, "eap", BAD)}
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)


def _health(address: tuple[str, int]) -> ComponentHealth | None:
    state, health = ping_answer(address, timeout_s=1.0)
    return health if state == OK else None


def _line(msg_id: str, kind: str, shard: int) -> bytes:
    env = json.loads(Envelope(msg_id, kind, f"key-{msg_id}", shard, time.time()).to_json())
    return json.dumps({"env": env}).encode() + b"\n"


def _exchange(address: tuple[str, int], lines: list[bytes]) -> list[dict[str, Any]]:
    with socket.create_connection(address, timeout=5.0) as conn:
        conn.sendall(b"".join(lines))
        reader = conn.makefile("rb")
        return [json.loads(reader.readline()) for _ in lines]


def _send_until_acked(address: tuple[str, int], kind: str, ids: list[str]) -> None:
    """Send each message until acknowledged (the router learns ownership from the store
    within its poll: until then it answers no-owner)."""
    waiting = list(ids)

    def round_trip() -> bool:
        answers = _exchange(address, [_line(i, kind, n % SHARDS) for n, i in enumerate(waiting)])
        refused = {a.get("reason") for a in answers if not a["ok"]}
        assert refused <= {"no-owner"}, answers
        waiting[:] = [i for i, a in zip(waiting, answers, strict=True) if not a["ok"]]
        return not waiting

    wait_until(round_trip, f"{kind} messages acknowledged", ceiling_s=READY_CEILING_S)


def test_the_ping_reports_the_version_and_counters_that_grow_with_traffic(
    run_dir: Path, processes: dict[str, subprocess.Popen[bytes]]
) -> None:
    site = Endpoints.load(run_dir).sites["a"]
    assert site.router is not None
    backbone, eap = site.modules["backbone"], site.modules["eap"]
    wait_until(lambda: _health(backbone) is not None, "backbone ready", ceiling_s=READY_CEILING_S)
    wait_until(lambda: _health(eap) is not None, "eap ready", ceiling_s=READY_CEILING_S)
    assert _health(backbone) == ComponentHealth("2.0.0")
    assert _health(eap) == ComponentHealth(BAD)  # ready like any other

    _send_until_acked(site.router, "status", [f"s{i}" for i in range(MESSAGES)])
    health = _health(backbone)
    assert health is not None
    # each message counted twice in the process: delivered by its router, applied by its module
    assert (health.version, health.handled, health.errors) == ("2.0.0", 2 * MESSAGES, 0)
    assert sum(health.latency_counts) == health.handled

    # the bad version: refused at its own port and through the router, each an error
    direct = _exchange(eap, [_line(f"e{i}", "alarm", i % SHARDS) for i in range(3)])
    assert [a["reason"] for a in direct] == ["version-error"] * 3
    routed: list[dict[str, Any]] = []

    def through_router() -> bool:
        routed[:] = _exchange(site.router, [_line("r0", "alarm", 0)])
        return routed[0].get("reason") != "no-owner"

    wait_until(through_router, "alarm routed to eap", ceiling_s=READY_CEILING_S)
    assert routed == [{"id": "r0", "ok": False, "reason": "version-error", "site": "a"}]
    bad = _health(eap)
    assert bad is not None
    assert (bad.version, bad.handled, bad.errors) == (BAD, 0, 4)
    after = _health(backbone)
    assert after is not None
    assert after.handled == health.handled + 1  # the router delivered the refused one
    assert after.errors == 0

    for proc in processes.values():
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(timeout=STOP_TIMEOUT_S) for proc in processes.values()] == [0, 0]
    ledger = Ledger(run_dir / "ledger-a-eap.db", site="a")
    try:
        assert len(ledger) == 0
    finally:
        ledger.close()


def test_an_invalid_version_is_a_usage_error(run_dir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "failover",
            "component",
            "run",
            "--site=a",
            "--component=eap",
            f"--run-dir={run_dir}",
            "--version=not a version",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("bfm: --version: version 'not a version' is not valid")
    assert "Traceback" not in result.stderr
