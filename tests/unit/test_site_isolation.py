"""The leader's out-of-service isolation of a dead site (``failover.runtime.site_isolation``)
on the runtime cluster harness with the memory store.

The platform here is ``Nodes``, an in-memory stand-in for the ``NodeIsolation`` port that
the test sets by hand; the Kubernetes platform behind the same port is exercised against
the API double in ``tests/scenarios/test_kubernetes_scenarios.py``.
"""

from __future__ import annotations

import logging

import pytest
from support.runtime_cluster import COMPONENTS, TIMING, TOPOLOGY, Cluster, started

from failover.adapters.memory_store import MemoryStore
from failover.core.isolation import IsolationStep
from failover.ports import PlatformError, SiteNodes
from failover.runtime.site_isolation import SiteIsolation


class Nodes:
    """One node per site; ``up`` and ``marked`` set by the test or by isolate/release."""

    def __init__(self) -> None:
        self.up = {s: True for s in TOPOLOGY.site_names}
        self.marked: set[str] = set()
        self.broken = False
        self.calls: list[tuple[str, str]] = []

    def site_nodes(self) -> list[SiteNodes]:
        if self.broken:
            raise PlatformError("the API server did not answer")
        return [
            SiteNodes(site=s, nodes=1, up=int(self.up[s]), isolated=int(s in self.marked))
            for s in sorted(self.up)
        ]

    def isolate(self, site: str) -> list[str]:
        self.calls.append(("isolate", site))
        self.marked.add(site)
        return [f"node-{site}"]

    def release(self, site: str) -> list[str]:
        self.calls.append(("release", site))
        self.marked.discard(site)
        return [f"node-{site}"]


def _wired(cluster: Cluster) -> tuple[Nodes, dict[str, SiteIsolation]]:
    nodes = Nodes()
    loops = {
        s: SiteIsolation(nodes, store=cluster.store, topology=TOPOLOGY, clock=cluster.clock)
        for s in cluster.controllers
    }
    return nodes, loops


def _run(cluster: Cluster, loops: dict[str, SiteIsolation], seconds: float) -> list[object]:
    done: list[object] = []

    def each() -> None:
        for site in cluster.running_controllers:
            done.extend(loops[site].tick(cluster.controllers[site]))

    cluster.run(seconds, each=each)
    return done


def test_a_dead_fenced_site_is_isolated_once_by_the_leader_and_released_when_back() -> None:
    cluster = started(MemoryStore())
    nodes, loops = _wired(cluster)
    assert _run(cluster, loops, 2.0) == []  # all up: nothing to do
    cluster.stop("a")
    nodes.up["a"] = False
    done = _run(cluster, loops, TIMING.lease_duration_s + 3.0)
    assert done == [(IsolationStep.ISOLATE, "a")]
    assert all(cluster.ownership(c).counts(("a",)).get("a", 0) == 0 for c in COMPONENTS)
    assert _run(cluster, loops, 3.0) == []  # marked once
    nodes.up["a"] = True  # the node is back (BFM's agent there not yet)
    assert _run(cluster, loops, 2.0) == [(IsolationStep.RELEASE, "a")]
    assert nodes.calls == [("isolate", "a"), ("release", "a")]
    assert cluster.violations == []


def test_a_site_whose_nodes_stay_up_is_never_isolated() -> None:
    cluster = started(MemoryStore())
    nodes, loops = _wired(cluster)
    cluster.stop("a")  # BFM's processes died, the node did not
    assert _run(cluster, loops, TIMING.lease_duration_s + 5.0) == []
    assert nodes.calls == []


def test_a_down_node_is_not_isolated_while_its_site_still_holds_shards() -> None:
    cluster = started(MemoryStore())
    nodes, loops = _wired(cluster)
    nodes.up["a"] = False  # the platform says down, BFM still sees a alive and owning
    assert _run(cluster, loops, 3.0) == []


def test_an_unreachable_platform_is_logged_once_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = started(MemoryStore())
    nodes, loops = _wired(cluster)
    nodes.broken = True
    with caplog.at_level(logging.ERROR, logger="bfm.isolation"):
        assert _run(cluster, loops, 5.0) == []
    failed = [r for r in caplog.records if getattr(r, "event", "") == "isolation_failed"]
    assert len(failed) == 1 and "did not answer" in failed[0].getMessage()
    leader = next(
        s for s in cluster.running_controllers if cluster.controllers[s].leading(cluster.now())
    )
    assert "did not answer" in loops[leader].problem
