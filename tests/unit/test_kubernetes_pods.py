"""The Kubernetes platform's pure mapping (``failover.adapters.kubernetes_pods``) and the
leader's isolation rule (``failover.core.isolation``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.adapters import kubernetes_pods as pods
from failover.core.isolation import IsolationFacts, IsolationStep, isolation_step
from failover.ports import InstanceState


def _pod(phase: str, *, terminated: dict[str, Any] | None = None, deleting: bool = False) -> Any:
    status: dict[str, Any] = {"phase": phase}
    if terminated is not None:
        status["containerStatuses"] = [{"name": "eap", "state": {"terminated": terminated}}]
    meta: dict[str, Any] = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    return {"metadata": meta, "status": status}


def test_a_pod_body_pins_the_site_and_never_restarts_by_itself() -> None:
    template = pods.PodTemplate(platform="t1", extra_args=("--run-dir=/x",), env=(("K", "v"),))
    body = template.body("bfm-a-eap-1", "a", "eap", "2.0.0", serving=False)
    spec, labels = body["spec"], body["metadata"]["labels"]
    assert spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {pods.ZONE_LABEL: "A"}
    assert labels[pods.SITE_LABEL] == "a" and labels[pods.COMPONENT_LABEL] == "eap"
    assert labels[pods.SERVING_LABEL] == "false" and labels[pods.PLATFORM_LABEL] == "t1"
    (container,) = spec["containers"]
    assert container["image"] == f"{pods.DEFAULT_IMAGE}:2.0.0"
    assert "--version=2.0.0" in container["args"] and container["args"][-1] == "--run-dir=/x"
    assert {"name": "BFM_VERSION", "value": "2.0.0"} in container["env"]
    assert {"name": "K", "value": "v"} in container["env"]
    assert pods.pod_version(body) == "2.0.0"


def test_pod_names_are_new_per_start_and_valid() -> None:
    names = {pods.pod_name("a", "eap") for _ in range(20)}
    assert len(names) == 20
    assert all(n.startswith("bfm-a-eap-") and len(n) < 64 for n in names)


def test_pod_states() -> None:
    assert pods.pod_state(None, wanted=False).state is InstanceState.STOPPED
    assert pods.pod_state(_pod("Running"), wanted=False).state is InstanceState.STOPPED
    assert pods.pod_state(_pod("Pending"), wanted=True).state is InstanceState.RUNNING
    assert pods.pod_state(_pod("Running"), wanted=True).state is InstanceState.RUNNING
    gone = pods.pod_state(None, wanted=True)
    assert (gone.state, gone.exit_code) == (InstanceState.EXITED, None)
    killed = pods.pod_state(_pod("Failed", terminated={"exitCode": 137, "signal": 9}), wanted=True)
    assert (killed.state, killed.exit_code) == (InstanceState.EXITED, -9)
    failed = pods.pod_state(_pod("Failed", terminated={"exitCode": 3}), wanted=True)
    assert failed.exit_code == 3
    assert pods.pod_state(_pod("Running", deleting=True), wanted=True).state is (
        InstanceState.EXITED
    )


def _node(name: str, zone: str | None, *, ready: str = "True", taints: Any = None) -> Any:
    labels = {pods.ZONE_LABEL: zone} if zone else {}
    return {
        "metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def _lease(renew: str, version: str = "1") -> Any:
    return {
        "metadata": {"resourceVersion": version},
        "spec": {"renewTime": renew, "holderIdentity": "n", "leaseDurationSeconds": 40},
    }


def test_a_node_lease_is_stale_after_its_duration_without_change_on_our_clock() -> None:
    watch = pods.LeaseWatch()
    assert watch.fresh("n", _lease("t1"), 0.0)
    assert watch.fresh("n", _lease("t1"), 39.9)
    assert not watch.fresh("n", _lease("t1"), 40.0)
    assert watch.fresh("n", _lease("t2", "2"), 40.1)  # renewed: fresh again, from now
    assert not watch.fresh("n", _lease("t2", "2"), 80.5)
    assert not watch.fresh("n", None, 80.6)  # no Lease at all


def test_node_views_group_nodes_by_zone_and_judge_them() -> None:
    nodes = [
        _node("n-a", "A"),
        _node("n-b", "B", ready="Unknown"),
        _node("n-w", "W", taints=[pods.OUT_OF_SERVICE_TAINT]),
        _node("stray", None),
    ]
    leases = {"n-a": _lease("t"), "n-b": _lease("t")}  # n-w has none
    views = {v.name: v for v in pods.node_views(nodes, leases, pods.LeaseWatch(), 0.0)}
    assert set(views) == {"n-a", "n-b", "n-w"}
    assert views["n-a"].up and views["n-a"].site == "a"
    assert not views["n-b"].up and views["n-b"].lease_fresh
    assert not views["n-w"].up and views["n-w"].out_of_service


def test_the_out_of_service_taint_is_added_once_and_removed_alone() -> None:
    other = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
    node = _node("n", "A", taints=[other])
    added = pods.taints_with_out_of_service(node, present=True)
    assert added == [other, pods.OUT_OF_SERVICE_TAINT]
    tainted = _node("n", "A", taints=added)
    assert pods.taints_with_out_of_service(tainted, present=True) is None
    assert pods.taints_with_out_of_service(tainted, present=False) == [other]
    assert pods.taints_with_out_of_service(node, present=False) is None


def _facts(**changes: Any) -> IsolationFacts:
    dead: dict[str, Any] = {
        "site": "a",
        "bfm_alive": False,
        "shards_held": 0,
        "nodes": 2,
        "nodes_up": 0,
        "nodes_isolated": 0,
    }
    return IsolationFacts(**{**dead, **changes})


def test_isolation_needs_every_witness() -> None:
    assert isolation_step(_facts()) is IsolationStep.ISOLATE
    assert isolation_step(_facts(nodes_isolated=1)) is IsolationStep.ISOLATE  # partial
    for spoiler in (
        {"bfm_alive": True},
        {"bfm_alive": None},
        {"shards_held": 1},
        {"shards_held": -1},
        {"nodes_up": 1},
        {"nodes": 0},
        {"nodes_isolated": 2},
    ):
        assert isolation_step(_facts(**spoiler)) is None, spoiler


def test_release_when_every_node_is_up_whatever_bfm_says() -> None:
    assert isolation_step(_facts(nodes_isolated=2, nodes_up=2)) is IsolationStep.RELEASE
    assert isolation_step(_facts(nodes_isolated=1, nodes_up=2, bfm_alive=None)) is (
        IsolationStep.RELEASE
    )
    assert isolation_step(_facts(nodes_isolated=2, nodes_up=1)) is None


@given(
    bfm_alive=st.sampled_from([True, False, None]),
    shards_held=st.integers(-1, 8),
    nodes=st.integers(0, 3),
    data=st.data(),
)
def test_isolation_never_marks_a_site_that_is_up_or_holds_work(
    bfm_alive: bool | None, shards_held: int, nodes: int, data: st.DataObject
) -> None:
    up = data.draw(st.integers(0, nodes))
    isolated = data.draw(st.integers(0, nodes))
    step = isolation_step(IsolationFacts("a", bfm_alive, shards_held, nodes, up, isolated))
    if step is IsolationStep.ISOLATE:
        assert bfm_alive is False and shards_held == 0 and up == 0 and isolated < nodes
    if step is IsolationStep.RELEASE:
        assert up == nodes > 0 and isolated > 0


@pytest.mark.parametrize(
    ("image", "wanted"),
    [
        ("ghcr.io/hemisphere/bfm", "ghcr.io/hemisphere/bfm:2.1.0"),
        ("registry.local:5000/bfm", "registry.local:5000/bfm:2.1.0"),  # a port is no tag
        ("ghcr.io/hemisphere/bfm:0.1.0", "ghcr.io/hemisphere/bfm:0.1.0"),
        (
            "registry.local:5000/bfm@sha256:" + "a" * 64,
            "registry.local:5000/bfm@sha256:" + "a" * 64,
        ),
    ],
)
def test_an_image_with_its_own_tag_or_digest_runs_at_every_version(image: str, wanted: str) -> None:
    body = pods.PodTemplate(image=image).body("bfm-a-eap-1", "a", "eap", "2.1.0", serving=True)
    (container,) = body["spec"]["containers"]
    assert container["image"] == wanted
    assert "--version=2.1.0" in container["args"]  # the version is still what it reports
