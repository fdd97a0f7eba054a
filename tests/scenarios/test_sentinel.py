"""The Redis Sentinel peer baseline in the three-site network harness (docs/sentinel.md).

Real ``redis-server`` (primary at a, replica at b) and ``redis-sentinel`` (a, b, w; quorum
2, down-after 1 s, failover-timeout 3 s) in network namespaces; the writers and every
check run in the clients' namespace c. Root, ``ip netns``, redis-server/redis-sentinel and
redis-py are needed; without them the tests skip with the reason (a failure under
CI=true). About 45 s in all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.chaos import netns
from failover.chaos.netns import Network
from failover.chaos.sentinel import SentinelError, SentinelSystem, available
from failover.chaos.sentinel_analysis import SentinelOutcome, read_history

pytestmark = pytest.mark.scenario

RATE_PER_S = 50.0  # per client
WRITERS_MAX_S = 60.0  # the writers are stopped well before this
RECOVERY_CEILING_S = 30.0  # generous: the reference is 2.2-3.3 s
FAILOVER_WAIT_S = 20.0
DEMOTION_WAIT_S = 30.0  # the reference: the old primary acked for ~10 s after SIGCONT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _our_namespaces(prefix: str) -> list[str]:
    return [ns for ns in netns.namespaces() if ns.startswith(f"{prefix}-")]


@pytest.fixture
def net() -> Iterator[Network]:
    reason = available()
    if reason is not None:
        pytest.skip(f"Sentinel baseline cannot run here: {reason}")
    with Network() as network:
        yield network
    assert _our_namespaces(network.prefix) == []


def _report(name: str, outcome: SentinelOutcome) -> None:
    clients = {k: (c.recovery_s, c.stale_acked, c.acked_lost) for k, c in outcome.by_client.items()}
    print(
        f"{name}: recovery_s={outcome.recovery_s} stale_acked={outcome.stale_acked} "
        f"stale_window_s={outcome.stale_window_s} acked_lost={outcome.acked_lost} "
        f"promoted_after_s={(outcome.promoted_at_wall_s or 0) - outcome.fault_at_wall_s} "
        f"by client (recovery_s, stale_acked, acked_lost)={clients}"
    )


def test_start_up_and_stop_leave_nothing_behind(tmp_path: Path) -> None:
    reason = available()
    if reason is not None:
        pytest.skip(f"Sentinel baseline cannot run here: {reason}")
    net = Network()
    try:
        system = SentinelSystem(net, tmp_path)
        with system:
            assert system.master_address() == system.primary
            replica = system.observe.info("b")
            assert (replica["role"], replica["master_link_status"]) == ("slave", "up")
            for site in ("a", "b", "w"):
                seen = system.observe.sentinel_master(site)
                assert seen["num-other-sentinels"] == "2"
                assert seen["quorum"] == "2"
                assert seen["down-after-milliseconds"] == "1000"
                assert seen["failover-timeout"] == "3000"
            run = system.start_writers(WRITERS_MAX_S, RATE_PER_S, tmp_path / "history.jsonl")
            # Stop with the primary paused and the writers running: the hardest case.
            system.pause_primary()
        pids = [p.pid for p in system.procs.values()] + [run.proc.pid]
        assert len(pids) == 6
        assert [pid for pid in pids if _alive(pid)] == []
        assert all(p.returncode is not None for p in system.procs.values())
        system.stop()  # idempotent
        assert any(r["op"] == "ack" for r in read_history(run.history_path))
    finally:
        net.close()
    assert _our_namespaces(net.prefix) == []


def test_a_server_that_cannot_start_fails_fast_naming_its_log(net: Network, tmp_path: Path) -> None:
    system = SentinelSystem(net, tmp_path, quorum=0)  # redis-sentinel refuses quorum 0
    began = time.monotonic()
    with pytest.raises(SentinelError, match=r"(?s)exited on its own.*Quorum must be 1"):
        system.start()
    assert time.monotonic() - began < 15.0  # not the whole start-up timeout
    assert all(p.returncode is not None for p in system.procs.values())


def test_kill9_of_the_primary_fails_over_to_b(net: Network, tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    with SentinelSystem(net, tmp_path) as system:
        run = system.start_writers(WRITERS_MAX_S, RATE_PER_S, history)
        time.sleep(1.0)
        fault_at = system.kill_primary()
        system.wait_for_master(system.replica, timeout_s=FAILOVER_WAIT_S)
        time.sleep(1.0)  # writes acknowledged by b after the switch
        run.stop(timeout_s=5.0)
        outcome = system.analyse(history, fault_at)
    _report("kill -9", outcome)
    assert outcome.recovery_s is not None
    assert 0.5 < outcome.recovery_s < RECOVERY_CEILING_S
    assert outcome.by_client["reconnecting"].recovery_s is not None
    assert outcome.promoted_at_wall_s is not None
    assert outcome.promoted_at_wall_s > fault_at
    assert outcome.stale_acked == 0  # a dead primary acknowledges nothing
    # Replication is asynchronous: only writes a acknowledged before it died may be lost.
    acked_by_a = {
        r["id"]
        for r in read_history(history)
        if r["op"] == "ack" and r["server"] == system.primary and r["t"] <= fault_at
    }
    assert set(outcome.lost_ids) <= acked_by_a


def test_sigstop_then_sigcont_old_primary_acknowledges_writes_that_are_lost(
    net: Network, tmp_path: Path
) -> None:
    """SIGSTOP the primary past down-after, wait for the failover to b, SIGCONT it.

    The sticky client (no socket timeout) had a SET in flight to a: after SIGCONT, a
    answers it and the next ones, as a master, until Sentinel demotes it (about 10 s
    here, as in the reference); a's resync from b then drops them all. The reconnecting
    client (0.5 s timeout) moved to b and is only measured for recovery.
    """
    history = tmp_path / "history.jsonl"
    with SentinelSystem(net, tmp_path) as system:
        run = system.start_writers(WRITERS_MAX_S, RATE_PER_S, history)
        time.sleep(1.0)
        fault_at = system.pause_primary()
        system.wait_for_master(system.replica, timeout_s=FAILOVER_WAIT_S)
        time.sleep(0.5)
        resumed_at = system.resume_primary()
        demoted_at = system.wait_replica_of("a", system.replica, timeout_s=DEMOTION_WAIT_S)
        time.sleep(1.0)  # the sticky client's writes after its move to b
        run.stop(timeout_s=5.0)
        outcome = system.analyse(history, fault_at)
    _report(f"SIGSTOP (demoted {demoted_at - resumed_at:.1f} s after SIGCONT)", outcome)
    assert outcome.recovery_s is not None
    assert 1.0 <= outcome.recovery_s < RECOVERY_CEILING_S  # not before down-after
    assert outcome.promoted_at_wall_s is not None
    assert outcome.promoted_at_wall_s < resumed_at
    sticky = outcome.by_client["sticky"]
    assert sticky.stale_acked > 0
    assert outcome.stale_acked >= sticky.stale_acked
    assert outcome.stale_window_s is not None
    assert outcome.stale_window_s > 0
    assert outcome.stale_acked_lost == outcome.stale_acked  # every stale ack was lost
    assert outcome.acked_lost >= outcome.stale_acked
    assert sticky.recovery_s is not None  # it reached b after the demotion
