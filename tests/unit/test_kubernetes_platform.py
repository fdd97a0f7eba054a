"""The Kubernetes platform's own behaviour, beyond the Platform contract: routing labels,
evictions and PodDisruptionBudgets, drains, node facts, the out-of-service taint, errors,
and the RBAC list.

Against the Kubernetes API double (``tests/support/kube_double.py``; a double because no
kube-apiserver can be installed here) over real HTTP with the official client, its pods run
by the kubelet double (``tests/support/kubelet_double.py``) as local processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client
from support.kube_double import Fault, KubeApiDouble, add_site_nodes
from support.kubelet_double import KUBELET_USER_AGENT, KubeletDouble

from failover.adapters.fake_clock import FakeClock
from failover.adapters.kubernetes_platform import KubernetesPlatform
from failover.adapters.kubernetes_pods import (
    OUT_OF_SERVICE_TAINT,
    SERVING_LABEL,
    PodTemplate,
)
from failover.adapters.kubernetes_rbac import PLATFORM_MODULE, allowed, granted
from failover.core.topology import default_topology
from failover.ports import InstanceState, PlatformError, SiteNodes
from failover.workload.launcher import wait_until

TOPOLOGY = default_topology(shards_per_component=2, components=("backbone", "eap"))
NAMESPACE = "bfm"
SLEEPER = ("python", "-c", "import time; time.sleep(600)")
CEILING_S = 30.0


@dataclass
class Kube:
    double: KubeApiDouble
    kubelet: KubeletDouble
    clock: FakeClock
    platform: KubernetesPlatform
    core: client.CoreV1Api

    def pod_labels(self, name: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_pod(name, NAMESPACE).metadata.labels or {})

    def running(self, name: str) -> None:
        wait_until(lambda: self.kubelet.pid(name) is not None, f"{name} runs", ceiling_s=CEILING_S)


@pytest.fixture
def kube() -> Iterator[Kube]:
    double = KubeApiDouble().start()
    kubelet: KubeletDouble | None = None
    platform: KubernetesPlatform | None = None
    try:
        add_site_nodes(double, NAMESPACE, TOPOLOGY.site_names)
        kubelet = KubeletDouble(double, NAMESPACE, node_lease_renew_s=0.2).start()
        clock = FakeClock()
        platform = KubernetesPlatform(
            double.configuration(),
            TOPOLOGY,
            namespace=NAMESPACE,
            clock=clock,
            template=PodTemplate(platform="unit", command=SLEEPER, grace_s=1),
        )
        core = client.CoreV1Api(client.ApiClient(double.configuration()))
        made = Kube(double, kubelet, clock, platform, core)
        wait_until(
            lambda: all(f.reachable for f in made.platform.sites()),
            "node Leases written",
            ceiling_s=CEILING_S,
        )
        yield made
    finally:
        if platform is not None:
            platform.close()
        if kubelet is not None:
            kubelet.stop()
        double.stop()


def test_routing_labels_every_pod_of_the_site_and_new_pods_follow(kube: Kube) -> None:
    first = kube.platform.start("a", "eap")
    at_b = kube.platform.start("b", "eap")
    assert kube.pod_labels(first.instance_id)[SERVING_LABEL] == "true"
    kube.platform.route("a", serving=False)
    assert kube.pod_labels(first.instance_id)[SERVING_LABEL] == "false"
    assert kube.pod_labels(at_b.instance_id)[SERVING_LABEL] == "true"
    later = kube.platform.start("a", "backbone")
    assert kube.pod_labels(later.instance_id)[SERVING_LABEL] == "false"
    selected = kube.core.list_namespaced_pod(NAMESPACE, label_selector=f"{SERVING_LABEL}=true")
    assert [p.metadata.name for p in selected.items] == [at_b.instance_id]


def test_a_version_change_refused_by_a_disruption_budget_keeps_the_old_pod(kube: Kube) -> None:
    started = kube.platform.start("a", "eap")
    kube.running(started.instance_id)
    kube.double.add_pdb(NAMESPACE, "eap-a", {"bfm.hemisphere.io/site": "a"}, min_available=1)
    with pytest.raises(PlatformError, match="disruption budget"):
        kube.platform.set_version("a", "eap", "2.0.0", timeout_s=1.0)
    kept = kube.platform.instance("a", "eap")
    assert (kept.instance_id, kept.state, kept.version) == (
        started.instance_id,
        InstanceState.RUNNING,
        started.version,
    )
    policy = client.PolicyV1Api(client.ApiClient(kube.double.configuration()))
    policy.delete_namespaced_pod_disruption_budget("eap-a", NAMESPACE)
    changed = kube.platform.set_version("a", "eap", "2.0.0", timeout_s=2.0)
    assert changed.instance_id != started.instance_id and changed.version == "2.0.0"


def test_drain_site_cordons_and_evicts_and_uncordon_lets_pods_back(kube: Kube) -> None:
    started = [kube.platform.start("a", c) for c in TOPOLOGY.components]
    for instance in started:
        kube.running(instance.instance_id)
    evicted = kube.platform.drain_site("a", timeout_s=5.0)
    assert sorted(evicted) == sorted(i.instance_id for i in started)
    assert kube.core.read_node("node-a").spec.unschedulable is True
    assert {i.state for i in kube.platform.instances("a")} == {InstanceState.STOPPED}
    pending = kube.platform.start("a", "eap")  # cordoned: scheduled nowhere
    assert kube.kubelet.pid(pending.instance_id) is None
    kube.platform.uncordon_site("a")
    assert not kube.core.read_node("node-a").spec.unschedulable
    kube.running(pending.instance_id)


def test_a_node_whose_lease_stops_is_unreachable_after_the_lease_duration(kube: Kube) -> None:
    kube.kubelet.node_down("node-a")
    kube.platform.sites()  # seen now, unchanged from here on
    time.sleep(0.5)  # b's and w's kubelets renew meanwhile (in real time)
    kube.clock.advance(39.0)
    assert {f.site: f.reachable for f in kube.platform.sites()}["a"]
    time.sleep(0.5)
    kube.clock.advance(1.5)
    reachable = {f.site: f.reachable for f in kube.platform.sites()}
    assert reachable == {"a": False, "b": True, "w": True}
    assert SiteNodes("a", 1, 0, 0) in kube.platform.site_nodes()


def test_stopped_heartbeats_make_a_site_unreachable_at_once(kube: Kube) -> None:
    kube.platform.heartbeats = lambda site: site != "b"
    reachable = {f.site: f.reachable for f in kube.platform.sites()}
    assert reachable == {"a": True, "b": False, "w": True}


def test_isolate_and_release_taint_only_that_sites_nodes_and_keep_other_taints(
    kube: Kube,
) -> None:
    assert kube.platform.isolate("a") == ["node-a"]
    assert kube.platform.isolate("a") == []  # already
    taints = kube.core.read_node("node-a").spec.taints
    assert [(t.key, t.effect) for t in taints] == [
        (OUT_OF_SERVICE_TAINT["key"], OUT_OF_SERVICE_TAINT["effect"])
    ]
    assert not kube.core.read_node("node-b").spec.taints
    w_taints = [t.key for t in kube.core.read_node("node-w").spec.taints or []]
    assert kube.platform.release("a") == ["node-a"]
    assert not kube.core.read_node("node-a").spec.taints
    assert [t.key for t in kube.core.read_node("node-w").spec.taints or []] == w_taints


def test_an_unreachable_api_is_a_platform_error_naming_the_operation(kube: Kube) -> None:
    kube.double.inject(Fault(status=503))
    with pytest.raises(PlatformError, match=r"could not list pods.*HTTP 503.*API server up"):
        kube.platform.instances("a")
    with pytest.raises(PlatformError, match="could not list nodes"):
        kube.platform.sites()
    kube.double.heal()
    assert kube.platform.instances("a")


def test_the_platform_uses_exactly_its_rows_of_the_rbac_list(kube: Kube) -> None:
    before = len(kube.double.requests())
    started = kube.platform.start("a", "eap")
    kube.running(started.instance_id)
    kube.platform.instance("a", "eap")
    kube.platform.route("a", serving=False)
    kube.platform.sites()
    kube.platform.isolate("a")
    kube.platform.release("a")
    kube.platform.set_version("a", "eap", "2.0.0")
    kube.platform.drain_site("a")
    kube.platform.uncordon_site("a")
    kube.platform.stop("a", "eap")
    sent = [r for r in kube.double.requests()[before:] if r.user_agent != KUBELET_USER_AGENT]
    used = {(r.verb, r.group or "", r.resource) for r in sent}
    assert used == granted(used_by=PLATFORM_MODULE)
    for r in sent:
        namespaced = r.namespace is not None
        namespace = "" if r.namespace in (None, NAMESPACE) else str(r.namespace)
        assert allowed(
            r.group or "", r.resource or "", r.verb, namespaced=namespaced, namespace=namespace
        ), r
