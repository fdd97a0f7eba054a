"""Kubernetes scenarios: the runtime on the Kubernetes store and platform, over real HTTP.

The agents of a and b and the controllers of a, b and w (``support.runtime_cluster``,
stepped on a fake clock, every invariant of ARCHITECTURE.md section 3 checked after every
step) use ``KubernetesStore`` against the Kubernetes API double
(``tests/support/kube_double.py``: kmock's emulator, extended; a double because no
kube-apiserver can be installed here). The leader's site isolation uses
``KubernetesPlatform`` on the same double, whose nodes (one per zone A, B, W; W a
control-plane node) are kept by the kubelet double (``tests/support/kubelet_double.py``:
node Leases in ``kube-node-lease``, Ready conditions, pods as local processes, the taint
manager). The node Leases are judged on the cluster's fake clock (no change for 40 s).

Scenarios: the leader lost and taken over, a superseded leader's write refused (409); a
site's node going NotReady with its node Lease stopping: BFM fails over long before
Kubernetes notices, then the out-of-service taint releases the site's pods; the site back:
untainted, and handed its work back; the API server unavailable: the failsafe keeps
every owner while a and b hear each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support.kube_double import Fault, KubeApiDouble, add_site_nodes
from support.kubelet_double import KubeletDouble
from support.runtime_cluster import COMPONENTS, TIMING, TOPOLOGY, Cluster, kinds, started

from failover.adapters.kubernetes_platform import KubernetesPlatform
from failover.adapters.kubernetes_pods import (
    OUT_OF_SERVICE_TAINT,
    PodTemplate,
)
from failover.adapters.kubernetes_store import KubernetesStore
from failover.core.controller import DecisionKind
from failover.core.detector import DetectorTiming
from failover.core.isolation import IsolationStep
from failover.ports import Conflict
from failover.runtime.documents import LEADER_KEY, ownership_key
from failover.runtime.site_isolation import SiteIsolation

NAMESPACE = "bfm"
NODE_LEASE_S = 40.0  # the kubelet's leaseDurationSeconds
SLEEPER = ("python", "-c", "import time; time.sleep(600)")  # a stateful pod's stand-in


@dataclass
class World:
    double: KubeApiDouble
    kubelet: KubeletDouble
    cluster: Cluster
    platform: KubernetesPlatform
    isolation: dict[str, SiteIsolation]
    done: list[tuple[IsolationStep, str, float]]

    def run(self, seconds: float) -> None:
        self.cluster.run(seconds, each=self._isolate)

    def run_until(self, done: object, *, limit_s: float, what: str) -> float:
        def step() -> bool:
            self._isolate()
            return bool(done())  # type: ignore[operator]

        return self.cluster.run_until(step, limit_s=limit_s, what=what)

    def _isolate(self) -> None:
        for site in sorted(self.cluster.running_controllers):
            for step, where in self.isolation[site].tick(self.cluster.controllers[site]):
                self.done.append((step, where, self.cluster.now()))

    def node(self, name: str) -> client.V1Node:
        core = client.CoreV1Api(client.ApiClient(self.double.configuration()))
        return core.read_node(name)

    def tainted(self, name: str) -> bool:
        taints = self.node(name).spec.taints or []
        return any(t.key == OUT_OF_SERVICE_TAINT["key"] for t in taints)

    def pod_exists(self, name: str) -> bool:
        core = client.CoreV1Api(client.ApiClient(self.double.configuration()))
        try:
            core.read_namespaced_pod(name, NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


@pytest.fixture
def world() -> Iterator[World]:
    double = KubeApiDouble().start()
    kubelet: KubeletDouble | None = None
    platform: KubernetesPlatform | None = None
    try:
        add_site_nodes(double, NAMESPACE, TOPOLOGY.site_names)
        kubelet = KubeletDouble(double, NAMESPACE, node_lease_renew_s=0.5).start()
        store = KubernetesStore(double.configuration(), namespace=NAMESPACE)
        cluster = started(store)
        platform = KubernetesPlatform(
            double.configuration(),
            TOPOLOGY,
            namespace=NAMESPACE,
            clock=cluster.clock,
            template=PodTemplate(platform="scenario", command=SLEEPER),
        )
        isolation = {
            s: SiteIsolation(platform, store=store, topology=TOPOLOGY, clock=cluster.clock)
            for s in cluster.controllers
        }
        yield World(double, kubelet, cluster, platform, isolation, [])
    finally:
        double.heal()
        if platform is not None:
            platform.close()
        if kubelet is not None:
            kubelet.stop()
        double.stop()


def test_the_leader_lost_is_taken_over_and_its_stale_write_is_refused(world: World) -> None:
    cluster = world.cluster
    (old,) = cluster.leaders()
    before = {c: cluster.store.get(ownership_key(c)) for c in COMPONENTS}
    lost_s = cluster.now()
    cluster.running_controllers.discard(old)  # paused: neither driven nor renewing
    took_s = cluster.run_until(
        lambda: bool(cluster.leaders()) and cluster.leaders() != [old],
        limit_s=TIMING.lease_duration_s + 3.0,
        what="another controller leads",
    )
    assert took_s - lost_s <= TIMING.lease_duration_s + TIMING.renew_interval_s + 0.5
    (new,) = cluster.leaders()
    # Decisions go on under the new leader: a site's agent dies, its shards move.
    crashed = "a" if new != "a" else "b"
    survivor = "b" if crashed == "a" else "a"
    cluster.crash_agent(crashed)
    cluster.run_until(
        lambda: cluster.settled(sites=(survivor,)),
        limit_s=TIMING.lease_duration_s + 3.0,
        what=f"{crashed}'s shards at {survivor}",
    )
    assert (DecisionKind.FAILOVER, COMPONENTS[0]) in kinds(cluster.commits_since(took_s))
    # The old leader resumes: it reads the lease, sees another holder, never leads again.
    cluster.running_controllers.add(old)
    cluster.run(2.0)
    assert cluster.leaders() == [new]
    # Its write of what it last knew is refused by the API (409), never an overwrite.
    for c in COMPONENTS:
        stale = before[c]
        assert stale is not None
        current = cluster.store.get(ownership_key(c))
        with pytest.raises(Conflict):
            cluster.store.compare_and_set(
                ownership_key(c), stale.value, expected_revision=stale.revision
            )
        assert cluster.store.get(ownership_key(c)) == current
    leader_doc = cluster.store.get(LEADER_KEY)
    assert leader_doc is not None and new in str(leader_doc.value)
    assert cluster.violations == []


def test_a_dead_site_fails_over_fast_is_tainted_when_kubernetes_agrees_and_comes_back(
    world: World,
) -> None:
    cluster, platform = world.cluster, world.platform
    stateful = platform.start("a", "eap")  # a pod at a that holds something
    other = platform.start("b", "eap")
    world.run(1.0)
    assert world.kubelet.pid(stateful.instance_id) is not None
    # Site a loses power: its node's processes die, its node Lease stops.
    lost_s = cluster.now()
    world.kubelet.node_down("node-a")
    cluster.stop("a")
    cluster.crash_agent("a")
    moved_s = world.run_until(
        lambda: cluster.settled(sites=("b",)),
        limit_s=TIMING.lease_duration_s + 3.0,
        what="a's shards at b",
    )
    assert moved_s - lost_s < 5.0  # BFM: seconds
    assert world.done == []  # Kubernetes still thinks node-a is up: no taint yet
    assert not world.tainted("node-a")
    # ... until its node Lease has not changed for its duration (40 s on the same clock).
    world.run_until(lambda: bool(world.done), limit_s=NODE_LEASE_S + 5.0, what="node-a isolated")
    (step, site, isolated_s) = world.done[0]
    assert (step, site) == (IsolationStep.ISOLATE, "a")
    assert isolated_s - lost_s >= NODE_LEASE_S - 1.0
    assert world.tainted("node-a") and not world.tainted("node-b")
    world.kubelet.set_node_ready("node-a", "Unknown")  # the node-lifecycle controller, later
    # The taint releases a's pods at once (the taint manager); b's pod is untouched.
    world.run_until(
        lambda: not world.pod_exists(stateful.instance_id),
        limit_s=10.0,
        what="a's pod deleted by the out-of-service taint",
    )
    assert world.pod_exists(other.instance_id)
    # Power back: node-a is Ready and renews its Lease: the taint comes off first ...
    world.kubelet.node_up("node-a")
    world.run_until(lambda: not world.tainted("node-a"), limit_s=10.0, what="node-a untainted")
    assert [s for s, _, _ in world.done] == [IsolationStep.ISOLATE, IsolationStep.RELEASE]
    # ... then BFM's site process runs there again and gets its half back.
    cluster.start_agent("a")
    cluster.start_controller("a")
    world.run_until(
        lambda: cluster.settled() and cluster.even(),
        limit_s=DetectorTiming().handback_holdoff_s + 30.0,
        what="a handed its work back",
    )
    assert cluster.violations == []


def test_the_api_server_unavailable_freezes_every_owner_while_a_and_b_hear_each_other(
    world: World,
) -> None:
    cluster = world.cluster
    before = {c: cluster.ownership(c) for c in COMPONENTS}
    world.double.inject(Fault(status=503))  # every request, reads and writes
    out_s = cluster.now()
    world.run(TIMING.lease_duration_s * 3)
    assert cluster.fences == []  # nobody fenced itself: the failsafe held
    for c in COMPONENTS:  # every shard still served by its owner, under its epoch
        for i, a in enumerate(before[c].shards):
            assert a.owner is not None
            assert cluster.serving_now[(c, i)] == {cluster.labels[str(a.owner)]: a.epoch}
    assert world.done == []  # no isolation without the facts
    assert any(loop.problem for loop in world.isolation.values())
    world.double.heal()
    world.run(3.0)
    for c in COMPONENTS:  # back: nothing moved
        assert cluster.ownership(c).counts(("a", "b")) == before[c].counts(("a", "b"))
    assert not cluster.commits_since(out_s)
    assert cluster.violations == []
