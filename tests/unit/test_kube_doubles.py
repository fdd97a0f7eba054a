"""The Kubernetes API double's Pods, Nodes, budgets and subresources, and the kubelet double.

Everything goes through the official ``kubernetes`` client over real HTTP, as a Platform
adapter would: these tests pin the Kubernetes semantics the doubles promise
(``tests/support/kube_double.py`` and ``tests/support/kubelet_double.py`` list them).
Waits poll real processes and the kubelet double's thread, with deadlines that only
catch hangs.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support.kube_double import KubeApiDouble
from support.kubelet_double import KUBELET_USER_AGENT, LEASE_NAMESPACE, KubeletDouble

HANG_CEILING_S = 10.0
POLL_S = 0.02
SLEEPER = ["python", "-c", "import time; time.sleep(60)"]
OUT_OF_SERVICE = {
    "key": "node.kubernetes.io/out-of-service",
    "value": "nodeshutdown",
    "effect": "NoExecute",
}


def eventually(check: Callable[[], Any], what: str, *, timeout_s: float = HANG_CEILING_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        result = check()
        if result:
            return result
        time.sleep(POLL_S)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def zone() -> str:
    """A zone (site) of its own per test: the module's double keeps every test's nodes."""
    return f"z-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(double: KubeApiDouble) -> Iterator[client.ApiClient]:
    with client.ApiClient(double.configuration()) as opened:
        yield opened


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def kubelet(double: KubeApiDouble, namespace: str) -> Iterator[KubeletDouble]:
    with KubeletDouble(double, namespace, node_lease_renew_s=0.1) as started:
        yield started


def pod_body(
    name: str,
    zone: str,
    *,
    argv: list[str] | None = None,
    labels: dict[str, str] | None = None,
    grace_s: int | None = None,
) -> client.V1Pod:
    command = argv or SLEEPER
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": "bfm"}),
        spec=client.V1PodSpec(
            restart_policy="Never",
            node_selector={"topology.kubernetes.io/zone": zone},
            termination_grace_period_seconds=grace_s,
            containers=[
                client.V1Container(
                    name="main",
                    image="bfm:test",
                    command=command[:1],
                    args=command[1:],
                    env=[client.V1EnvVar(name="BFM_ROLE", value="worker")],
                )
            ],
        ),
    )


def raw(response: Any) -> Any:
    """The JSON of an answer to a call made with ``_preload_content=False``."""
    return json.loads(response.data)


def failure(err: ApiException) -> Any:
    """The Status body of an error answer."""
    return json.loads(err.body or "{}")


def read(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = raw(core.read_namespaced_pod(name, namespace, _preload_content=False))
    return found


def read_node(core: client.CoreV1Api, name: str) -> dict[str, Any]:
    found: dict[str, Any] = raw(core.read_node(name, _preload_content=False))
    return found


def gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace, _preload_content=False)
    except ApiException as err:
        return bool(err.status == 404)
    return False


def phase(core: client.CoreV1Api, namespace: str, name: str) -> str | None:
    found: str | None = read(core, namespace, name).get("status", {}).get("phase")
    return found


def running_pod(
    core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, name: str, zone: str, **kw: Any
) -> int:
    core.create_namespaced_pod(namespace, pod_body(name, zone, **kw))
    eventually(lambda: phase(core, namespace, name) == "Running", f"pod {name} Running")
    pid: int = eventually(lambda: kubelet.pid(name), f"the process of pod {name}")
    return pid


# --- the API double: pods ------------------------------------------------------------------


def test_pods_are_created_listed_by_label_and_stale_patches_conflict(
    core: client.CoreV1Api, namespace: str, zone: str
) -> None:
    body = pod_body("a-0", zone, labels={"app": "a"})
    first = raw(core.create_namespaced_pod(namespace, body, _preload_content=False))
    core.create_namespaced_pod(namespace, pod_body("b-0", zone, labels={"app": "b"}))
    assert first["metadata"]["uid"] and first["metadata"]["creationTimestamp"]
    assert first["status"]["phase"] == "Pending"
    assert first["spec"]["terminationGracePeriodSeconds"] == 30
    listed = raw(
        core.list_namespaced_pod(namespace, label_selector="app=a", _preload_content=False)
    )
    assert [p["metadata"]["name"] for p in listed["items"]] == ["a-0"]

    version = first["metadata"]["resourceVersion"]
    stale = {"metadata": {"resourceVersion": version, "labels": {"x": "1"}}}
    core.patch_namespaced_pod("a-0", namespace, stale)
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_pod("a-0", namespace, stale)
    assert raised.value.status == 409
    assert read(core, namespace, "a-0")["metadata"]["labels"] == {"app": "a", "x": "1"}


def test_a_pod_is_validated_and_its_containers_are_immutable(
    core: client.CoreV1Api, namespace: str, zone: str
) -> None:
    bad: Any = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "command": SLEEPER}]},  # no image
    }
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod(namespace, bad)
    assert raised.value.status == 422
    core.create_namespaced_pod(namespace, pod_body("p", zone))
    change = {"spec": {"containers": [{"name": "main", "args": ["other"]}]}}
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_pod("p", namespace, change)
    assert raised.value.status == 422
    assert "Forbidden" in failure(raised.value)["message"]


def test_a_status_write_changes_only_the_status(
    core: client.CoreV1Api, namespace: str, zone: str
) -> None:
    core.create_namespaced_pod(namespace, pod_body("p", zone))
    core.patch_namespaced_pod("p", namespace, {"status": {"phase": "Running"}})
    assert phase(core, namespace, "p") == "Pending"
    status = {"status": {"phase": "Running"}, "metadata": {"labels": {"x": "y"}}}
    core.patch_namespaced_pod_status("p", namespace, status)
    pod = read(core, namespace, "p")
    assert pod["status"]["phase"] == "Running"
    assert "x" not in pod["metadata"]["labels"]


def test_deleting_a_pod_never_scheduled_removes_it_at_once(
    core: client.CoreV1Api, namespace: str, zone: str
) -> None:
    core.create_namespaced_pod(namespace, pod_body("p", zone))
    core.delete_namespaced_pod("p", namespace, grace_period_seconds=30)
    assert gone(core, namespace, "p")


# --- nodes -----------------------------------------------------------------------------------


def test_add_node_registers_a_ready_node_and_stale_node_patches_conflict(
    double: KubeApiDouble, core: client.CoreV1Api, zone: str
) -> None:
    double.add_node(f"{zone}-cp", zone, control_plane=True)
    node = read_node(core, f"{zone}-cp")
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == zone
    assert node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert node["spec"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    ]
    assert [(c["type"], c["status"]) for c in node["status"]["conditions"]] == [("Ready", "True")]

    version = node["metadata"]["resourceVersion"]
    patch = {"metadata": {"resourceVersion": version}, "spec": {"taints": [OUT_OF_SERVICE]}}
    patched = raw(core.patch_node(f"{zone}-cp", patch, _preload_content=False))
    assert patched["spec"]["taints"] == [OUT_OF_SERVICE]  # the list is replaced whole
    with pytest.raises(ApiException) as raised:
        core.patch_node(
            f"{zone}-cp",
            {"metadata": {"resourceVersion": version}, "spec": {"unschedulable": True}},
        )
    assert raised.value.status == 409
    assert "unschedulable" not in read_node(core, f"{zone}-cp")["spec"]


# --- the kubelet double: scheduling, running, exits ---------------------------------------------


def test_a_pod_runs_on_a_node_of_its_zone_with_its_env(
    double: KubeApiDouble,
    core: client.CoreV1Api,
    kubelet: KubeletDouble,
    namespace: str,
    zone: str,
    tmp_path: Path,
) -> None:
    double.add_node(f"{zone}-1", zone)
    double.add_node(f"other-{zone}", f"other-{zone}")
    marker = tmp_path / "env"
    script = (
        f"import os, time; open({str(marker)!r}, 'w').write(os.environ['BFM_ROLE']); time.sleep(60)"
    )
    running_pod(core, kubelet, namespace, "p", zone, argv=["python", "-c", script])
    pod = read(core, namespace, "p")
    assert pod["spec"]["nodeName"] == f"{zone}-1"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    eventually(lambda: marker.exists() and marker.read_text() == "worker", "the env marker")


def test_a_pod_without_a_fitting_node_is_unschedulable(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    double.add_node(
        f"{zone}-tainted", zone, taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    )
    core.create_namespaced_pod(namespace, pod_body("p", zone))

    def unschedulable() -> bool:
        conditions = read(core, namespace, "p")["status"].get("conditions") or []
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions
        )

    eventually(unschedulable, "condition PodScheduled False, Unschedulable")
    assert "nodeName" not in read(core, namespace, "p")["spec"]
    assert phase(core, namespace, "p") == "Pending"


def test_a_killed_process_is_reported_failed_with_its_signal(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    double.add_node(f"{zone}-1", zone)
    pid = running_pod(core, kubelet, namespace, "p", zone)
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: phase(core, namespace, "p") == "Failed", "phase Failed")
    terminated = read(core, namespace, "p")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["signal"], terminated["reason"]) == (137, 9, "Error")


def test_a_process_that_exits_0_is_reported_succeeded(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    double.add_node(f"{zone}-1", zone)
    core.create_namespaced_pod(namespace, pod_body("p", zone, argv=["python", "-c", "pass"]))
    eventually(lambda: phase(core, namespace, "p") == "Succeeded", "phase Succeeded")
    terminated = read(core, namespace, "p")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")


# --- deletion ----------------------------------------------------------------------------------


def test_a_graceful_delete_keeps_the_pod_until_its_process_ends_on_sigterm(
    double: KubeApiDouble,
    core: client.CoreV1Api,
    kubelet: KubeletDouble,
    namespace: str,
    zone: str,
    tmp_path: Path,
) -> None:
    double.add_node(f"{zone}-1", zone)
    marker = tmp_path / "term"
    script = (
        "import signal, sys, time\n"
        f"def bye(*_): open({str(marker)!r}, 'w').write('TERM'); time.sleep(0.5); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(60)\n"
    )
    running_pod(core, kubelet, namespace, "p", zone, argv=["python", "-c", script])
    # The process lingers 0.5 s after SIGTERM: the pod must stay, terminating, meanwhile.
    options = client.V1DeleteOptions(grace_period_seconds=20)
    answer = raw(core.delete_namespaced_pod("p", namespace, body=options, _preload_content=False))
    assert answer["metadata"]["deletionTimestamp"]
    assert answer["metadata"]["deletionGracePeriodSeconds"] == 20
    # A second graceful delete (the default grace, 30 s, is longer) changes nothing.
    again = raw(core.delete_namespaced_pod("p", namespace, _preload_content=False))
    assert again["metadata"]["resourceVersion"] == answer["metadata"]["resourceVersion"]
    assert read(core, namespace, "p")["metadata"]["deletionTimestamp"]
    eventually(lambda: gone(core, namespace, "p"), "the pod removed by the kubelet")
    assert marker.read_text() == "TERM"
    assert kubelet.processes_gone("p")


def test_a_stopped_process_is_killed_after_the_grace_period(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    double.add_node(f"{zone}-1", zone)
    ignores_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    running_pod(core, kubelet, namespace, "p", zone, argv=["python", "-c", ignores_term])
    started_s = time.monotonic()
    core.delete_namespaced_pod("p", namespace, grace_period_seconds=1)
    eventually(lambda: gone(core, namespace, "p"), "the pod removed after SIGKILL")
    assert time.monotonic() - started_s >= 1.0
    assert kubelet.processes_gone("p")


def test_a_grace_0_delete_removes_the_pod_and_the_kubelet_kills_the_process(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    double.add_node(f"{zone}-1", zone)
    running_pod(core, kubelet, namespace, "p", zone)
    core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)
    assert gone(core, namespace, "p")
    eventually(lambda: kubelet.processes_gone("p"), "the process killed")


# --- eviction and budgets ------------------------------------------------------------------------


def evict(core: client.CoreV1Api, namespace: str, name: str) -> None:
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        delete_options=client.V1DeleteOptions(grace_period_seconds=1),
    )
    core.create_namespaced_pod_eviction(name, namespace, eviction, _preload_content=False)


@pytest.mark.parametrize(
    "limit", [{"min_available": 1}, {"max_unavailable": 0}, {"min_available": "50%"}]
)
def test_an_eviction_is_refused_while_the_budget_forbids_it(
    double: KubeApiDouble,
    core: client.CoreV1Api,
    kubelet: KubeletDouble,
    namespace: str,
    zone: str,
    limit: dict[str, Any],
) -> None:
    double.add_node(f"{zone}-1", zone)
    double.add_pdb(namespace, "keep-one", {"app": "bfm"}, **limit)
    running_pod(core, kubelet, namespace, "p", zone)
    with pytest.raises(ApiException) as raised:
        evict(core, namespace, "p")
    assert raised.value.status == 429
    body = failure(raised.value)
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert "keep-one" in body["details"]["causes"][0]["message"]
    assert read(core, namespace, "p")["metadata"].get("deletionTimestamp") is None


def test_an_eviction_within_the_budget_deletes_the_pod_gracefully(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    double.add_node(f"{zone}-1", zone)
    double.add_pdb(namespace, "one-may-go", {"app": "bfm"}, max_unavailable=1)
    running_pod(core, kubelet, namespace, "p-0", zone)
    running_pod(core, kubelet, namespace, "p-1", zone)
    policy = client.PolicyV1Api(core.api_client)
    budget = raw(
        policy.read_namespaced_pod_disruption_budget(
            "one-may-go", namespace, _preload_content=False
        )
    )
    assert (budget["status"]["currentHealthy"], budget["status"]["disruptionsAllowed"]) == (2, 1)

    response: Any = core.create_namespaced_pod_eviction(
        "p-0",
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name="p-0")),
        _preload_content=False,
    )
    assert response.status == 201
    assert json.loads(response.data)["status"] == "Success"
    with pytest.raises(ApiException) as raised:  # p-0 terminating: no disruption left
        evict(core, namespace, "p-1")
    assert raised.value.status == 429
    eventually(lambda: gone(core, namespace, "p-0"), "the evicted pod removed")
    with pytest.raises(ApiException) as raised:
        evict(core, namespace, "missing")
    assert raised.value.status == 404


def test_requests_are_recorded_as_rbac_sees_subresources(
    double: KubeApiDouble, core: client.CoreV1Api, namespace: str, zone: str
) -> None:
    core.create_namespaced_pod(namespace, pod_body("p", zone))
    before = len(double.requests())
    evict(core, namespace, "p")  # Pending: no budget applies, never scheduled: gone at once
    core.list_node()
    seen = [(r.verb, r.group, r.resource, r.namespace) for r in double.requests()[before:]]
    assert seen == [("create", "", "pods/eviction", namespace), ("list", "", "nodes", None)]
    assert gone(core, namespace, "p")


# --- node failures -------------------------------------------------------------------------------


def lease_renewed(api: client.ApiClient, node: str) -> datetime.datetime:
    """The lease's renewTime (the client sends datetimes as ``+00:00``, the double keeps that)."""
    leases = client.CoordinationV1Api(api)
    spec = raw(leases.read_namespaced_lease(node, LEASE_NAMESPACE, _preload_content=False))["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == (node, 40)
    return datetime.datetime.fromisoformat(spec["renewTime"])


def test_node_leases_are_renewed_until_the_node_goes_down(
    double: KubeApiDouble,
    api: client.ApiClient,
    core: client.CoreV1Api,
    kubelet: KubeletDouble,
    namespace: str,
    zone: str,
) -> None:
    node = f"{zone}-1"
    double.add_node(node, zone)
    pid = running_pod(core, kubelet, namespace, "p", zone)
    first = eventually(lambda: _try(lambda: lease_renewed(api, node)), "the node lease")
    eventually(lambda: lease_renewed(api, node) > first, "a lease renewal")
    kubelet.node_down(node)
    assert kubelet.processes_gone("p") and kubelet.pid("p") is None
    stopped = lease_renewed(api, node)
    time.sleep(0.4)  # several renewal periods (0.1 s) of a node that is down
    assert lease_renewed(api, node) == stopped
    assert phase(core, namespace, "p") == "Running"  # nobody reports it any more
    assert pid > 0

    kubelet.set_node_ready(node, "Unknown")
    taints = {(t["key"], t["effect"]) for t in read_node(core, node)["spec"]["taints"]}
    assert ("node.kubernetes.io/unreachable", "NoExecute") in taints
    kubelet.node_up(node)
    eventually(lambda: phase(core, namespace, "p") == "Failed", "the lost pod reported Failed")
    terminated = read(core, namespace, "p")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "ContainerStatusUnknown")
    eventually(lambda: lease_renewed(api, node) > stopped, "renewals after node_up")


def _try(read_it: Callable[[], Any]) -> Any:
    try:
        return read_it()
    except ApiException:
        return None


def test_the_out_of_service_taint_force_deletes_the_pods_of_a_down_node(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    node = f"{zone}-1"
    double.add_node(node, zone)
    running_pod(core, kubelet, namespace, "p", zone)
    kubelet.node_down(node)
    kubelet.set_node_ready(node, "Unknown")
    time.sleep(0.2)  # the default 300 s toleration of unreachable keeps the pod meanwhile
    assert not gone(core, namespace, "p")
    current = read_node(core, node)
    patch = {
        "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
        "spec": {"taints": [*current["spec"]["taints"], OUT_OF_SERVICE]},
    }
    core.patch_node(node, patch)
    eventually(lambda: gone(core, namespace, "p"), "the pod force-deleted")


def test_a_taint_not_tolerated_on_a_live_node_deletes_its_pods_gracefully(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    node = f"{zone}-1"
    double.add_node(node, zone)
    running_pod(core, kubelet, namespace, "p", zone)
    version = read_node(core, node)["metadata"]["resourceVersion"]
    core.patch_node(
        node, {"metadata": {"resourceVersion": version}, "spec": {"taints": [OUT_OF_SERVICE]}}
    )
    eventually(lambda: gone(core, namespace, "p"), "the pod deleted by the taint manager")
    assert kubelet.processes_gone("p")


def test_the_kubelet_double_reports_an_unreachable_api_and_stops(
    double: KubeApiDouble, namespace: str
) -> None:
    with KubeApiDouble() as lonely:
        kubelet = KubeletDouble(lonely, namespace, poll_interval_s=0.01).start()
        lonely.stop()
        try:
            eventually(lambda: kubelet.last_error, "an error message")
            assert "kubelet double" in str(kubelet.last_error)
        finally:
            kubelet.stop()


def test_the_kubelet_doubles_requests_are_told_apart_by_user_agent(
    double: KubeApiDouble, core: client.CoreV1Api, kubelet: KubeletDouble, namespace: str, zone: str
) -> None:
    double.add_node(f"{zone}-1", zone)
    before = len(double.requests())
    running_pod(core, kubelet, namespace, "p", zone)
    mine = {
        (r.verb, r.resource)
        for r in double.requests()[before:]
        if r.user_agent != KUBELET_USER_AGENT
    }
    kubelets = {
        (r.verb, r.resource)
        for r in double.requests()[before:]
        if r.user_agent == KUBELET_USER_AGENT
    }
    assert ("create", "pods") in mine and ("create", "pods/binding") not in mine
    assert {("create", "pods/binding"), ("patch", "pods/status")} <= kubelets
