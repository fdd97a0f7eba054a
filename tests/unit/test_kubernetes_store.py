"""The Kubernetes store's own behaviour: key mapping, error mapping, the RBAC list, the double.

The shared contract tests (``test_store_contract.py``) run against this store too; these
tests cover what only this backend has (its URLs: ``test_kubernetes_url.py``). Everything
runs against the Kubernetes API double of ``tests/support/kube_double.py`` (kmock's
emulator over real HTTP, extended where it lacks what the adapter relies on: it is a
double, not a kube-apiserver).
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from support.kube_double import ApiRequest, Fault, KubeApiDouble

from failover.adapters import kubernetes_objects as objects
from failover.adapters.kubernetes_rbac import (
    COMPONENTS,
    STORE_MODULE,
    allowed,
    granted,
    role_rules,
)
from failover.adapters.kubernetes_store import KubernetesStore
from failover.ports import Conflict, CoordinationStore, OutcomeUnknown, StoreUnavailable
from failover.runtime.documents import (
    ADMIN_POLICY_KEY,
    LEADER_KEY,
    event_key,
    lease_key,
    ownership_key,
)
from failover.workload.component_process import OwnershipWatch

# Ceilings only catch hangs: several times what the timeouts allow.
HANG_CEILING_S = 10.0
SHORT_TIMEOUT_S = 0.5  # only where a test makes the double hang; the others keep 3 s

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1).filter(
    str.isprintable
)
SITES = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1)


@pytest.fixture
def store(double: KubeApiDouble, namespace: str) -> Iterator[KubernetesStore]:
    opened = KubernetesStore(double.configuration(), namespace=namespace)
    yield opened
    double.heal()
    opened.close()


def _object(double: KubeApiDouble, namespace: str, key: str) -> dict[str, Any]:
    resource = "leases.v1.coordination.k8s.io" if objects.is_lease_key(key) else "configmaps.v1"
    found = double.api.objects[resource, namespace, objects.object_name("bfm", key)]
    assert not found.deleted
    raw: dict[str, Any] = found.raw
    return raw


# --- the mapping of keys to objects ----------------------------------------------------------


@given(KEYS, st.sampled_from(["bfm", "run-2", "x"]))
def test_every_key_gets_a_dns_label_name_that_depends_on_key_and_instance(
    key: str, instance: str
) -> None:
    name = objects.object_name(instance, key)
    assert DNS_LABEL.fullmatch(name), name
    assert name == objects.object_name(instance, key)
    assert name != objects.object_name(instance + "-other", key)
    assert LABEL_VALUE.fullmatch(objects.key_head_label(key))


@given(KEYS, KEYS)
def test_different_keys_get_different_names_and_heads(first: str, second: str) -> None:
    if first != second:
        assert objects.object_name("bfm", first) != objects.object_name("bfm", second)
    first_head, second_head = first.partition("/")[0], second.partition("/")[0]
    if first_head != second_head:
        assert objects.key_head_label(first) != objects.key_head_label(second)


@given(SITES, st.data())
def test_a_prefix_of_a_lease_key_never_skips_the_leases(site: str, data: st.DataObject) -> None:
    for key in (lease_key(site), LEADER_KEY):
        assert objects.is_lease_key(key)
        cut = data.draw(st.integers(min_value=0, max_value=len(key)))
        assert objects.may_hold_lease_keys(key[:cut]), key[:cut]


def test_the_runtime_lease_keys_are_leases_and_the_rest_config_maps() -> None:
    for key in (LEADER_KEY, lease_key("a"), lease_key("b"), lease_key("w")):
        assert objects.kind_of(key) == objects.LEASE
    for key in (ownership_key("eap"), ADMIN_POLICY_KEY, event_key(7), "sites/a/other", "x"):
        assert objects.kind_of(key) == objects.CONFIG_MAP
    for prefix in ("ownership/", "events/", "admin/", "sites/a/x", "controller/x"):
        assert not objects.may_hold_lease_keys(prefix)


@settings(max_examples=30)
@given(keys=st.lists(KEYS, min_size=1, max_size=3, unique=True))
def test_any_keys_round_trip_through_the_api(double: KubeApiDouble, keys: list[str]) -> None:
    namespace = f"h-{uuid.uuid4().hex[:16]}"
    double.add_namespace(namespace)
    store = KubernetesStore(double.configuration(), namespace=namespace)
    revisions = {key: store.create(key, {"key": key}) for key in keys}
    for key in keys:
        got = store.get(key)
        assert got is not None
        assert (got.key, got.value, got.revision) == (key, {"key": key}, revisions[key])
        assert key in [v.key for v in store.list(key[: len(key) // 2])]
    assert [v.key for v in store.list("")] == sorted(keys)
    store.close()


def test_leases_show_their_holder_and_duration_to_kubectl(
    store: KubernetesStore, double: KubeApiDouble, namespace: str
) -> None:
    store.create(lease_key("a"), {"holder": "a", "lease_duration_s": 2.5, "renew_count": 3})
    store.create(LEADER_KEY, {"holder": "w", "term": 2, "renew_count": 0})
    store.create(ownership_key("eap"), {"component": "eap"})
    lease = _object(double, namespace, lease_key("a"))
    assert lease["kind"] == "Lease"
    assert lease["spec"] == {"holderIdentity": "a", "leaseDurationSeconds": 3}
    annotations = lease["metadata"]["annotations"]
    assert annotations[objects.KEY_ANNOTATION] == lease_key("a")
    assert json.loads(annotations[objects.DOCUMENT_ANNOTATION])["renew_count"] == 3
    assert _object(double, namespace, LEADER_KEY)["spec"] == {"holderIdentity": "w"}
    config_map = _object(double, namespace, ownership_key("eap"))
    assert config_map["kind"] == "ConfigMap"
    assert json.loads(config_map["data"]["document"]) == {"component": "eap"}
    assert config_map["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "bfm",
        objects.STORE_LABEL: "bfm",
        objects.KEY_HEAD_LABEL: "ownership",
    }


def test_list_skips_the_leases_when_no_lease_key_can_match(
    store: KubernetesStore, double: KubeApiDouble, namespace: str
) -> None:
    before = len(double.requests())
    store.list("ownership/")
    sent = [(r.verb, r.resource) for r in double.requests()[before:]]
    assert sent == [("list", "configmaps")]


def test_two_instances_share_a_namespace_without_seeing_each_other(
    store: KubernetesStore, double: KubeApiDouble, namespace: str
) -> None:
    other = KubernetesStore(double.configuration(), namespace=namespace, instance="run-2")
    assert other.url == f"kubernetes://{namespace}?instance=run-2"
    mine = store.create(lease_key("a"), {"holder": "a"})
    theirs = other.create(lease_key("a"), {"holder": "b"})
    assert [(v.value, v.revision) for v in store.list("")] == [({"holder": "a"}, mine)]
    assert [(v.value, v.revision) for v in other.list("")] == [({"holder": "b"}, theirs)]
    other.close()


def test_copies_and_stray_objects_are_not_read_as_keys(
    store: KubernetesStore, double: KubeApiDouble, namespace: str
) -> None:
    store.create("k", {"v": 1})
    original = _object(double, namespace, "k")
    copied = json.loads(json.dumps(original))
    copied["metadata"]["name"] = "copy-of-k"  # kubectl get -o yaml | sed | kubectl apply
    double.api.objects["configmaps.v1", namespace, "copy-of-k"] = copied
    assert [v.key for v in store.list("")] == ["k"]


def test_an_object_edited_by_hand_is_unavailable_naming_it_and_the_fix(
    store: KubernetesStore, double: KubeApiDouble, namespace: str
) -> None:
    store.create(ownership_key("eap"), {"v": 1})
    name = objects.object_name("bfm", ownership_key("eap"))
    double.api.objects["configmaps.v1", namespace, name]["data"] = {"document": "{not json"}
    with pytest.raises(StoreUnavailable, match=f"kubectl delete configmap {name}"):
        store.get(ownership_key("eap"))


def test_documents_too_large_for_their_kind_are_refused_before_sending(
    store: KubernetesStore, double: KubeApiDouble
) -> None:
    before = len(double.requests())
    with pytest.raises(ValueError, match="at most 262144 bytes"):
        store.create(lease_key("a"), {"holder": "a", "pad": "x" * 300_000})
    with pytest.raises(ValueError, match="at most 1048576 bytes"):
        store.create("big", {"pad": "x" * 1_100_000})
    assert len(double.requests()) == before
    store.create("fits", {"pad": "x" * 900_000})  # a ConfigMap takes nearly 1 MiB


# --- errors ----------------------------------------------------------------------------------


def test_a_stale_write_is_conflict_and_changes_nothing(
    store: KubernetesStore, double: KubeApiDouble, namespace: str
) -> None:
    first = store.create(lease_key("a"), {"holder": "a"})
    other = KubernetesStore(double.configuration(), namespace=namespace)
    second = other.compare_and_set(lease_key("a"), {"holder": "b"}, expected_revision=first)
    with pytest.raises(Conflict, match="changed since"):
        store.compare_and_set(lease_key("a"), {"holder": "a"}, expected_revision=first)
    with pytest.raises(Conflict):
        store.delete(lease_key("a"), expected_revision=first)
    got = store.get(lease_key("a"))
    assert got is not None
    assert (got.value, got.revision) == ({"holder": "b"}, second)
    other.close()


@pytest.mark.parametrize("status", [500, 503, 504])
def test_5xx_is_unavailable_for_reads_and_outcome_unknown_for_writes(
    store: KubernetesStore, double: KubeApiDouble, namespace: str, status: int
) -> None:
    revision = store.create("k", {"v": 1})
    double.inject(Fault(status=status, verbs=frozenset({"get", "list"})))
    with pytest.raises(StoreUnavailable, match=f"HTTP {status}"):
        store.get("k")
    with pytest.raises(StoreUnavailable):
        store.list("")
    double.heal()
    double.inject(Fault(status=status, applied=False, times=1))
    with pytest.raises(OutcomeUnknown, match="may or may not"):
        store.compare_and_set("k", {"v": 2}, expected_revision=revision)
    assert _value(store, "k") == {"v": 1}  # not applied
    double.inject(Fault(status=status, applied=True, times=1))
    with pytest.raises(OutcomeUnknown):
        store.compare_and_set("k", {"v": 3}, expected_revision=revision)
    assert _value(store, "k") == {"v": 3}  # applied all the same


def _value(store: CoordinationStore, key: str) -> Any:
    got = store.get(key)
    return None if got is None else got.value


@pytest.mark.parametrize(("status", "says"), [(429, "HTTP 429"), (403, "kubernetes_rbac")])
def test_refusals_before_running_are_unavailable_and_write_nothing(
    store: KubernetesStore, double: KubeApiDouble, status: int, says: str
) -> None:
    double.inject(Fault(status=status, times=1))
    with pytest.raises(StoreUnavailable, match=says):
        store.create("k", {"v": 1})
    assert store.get("k") is None


def test_a_write_the_api_finds_invalid_is_a_value_error(
    store: KubernetesStore, double: KubeApiDouble
) -> None:
    double.inject(Fault(status=422, times=1))
    with pytest.raises(ValueError, match="refused the write"):
        store.create("k", {"v": 1})


def test_a_hung_api_server_is_bounded_and_its_write_not_retried(
    store: KubernetesStore, double: KubeApiDouble, namespace: str
) -> None:
    revision = store.create("k", {"v": 1})
    impatient = KubernetesStore(
        double.configuration(), namespace=namespace, request_timeout_s=SHORT_TIMEOUT_S
    )
    hang_s = SHORT_TIMEOUT_S * 4
    double.inject(Fault(status=200, delay_s=hang_s, verbs=frozenset({"get"}), times=1))
    started_s = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"no answer within {SHORT_TIMEOUT_S} s"):
        impatient.get("k")
    double.inject(Fault(status=200, applied=True, delay_s=hang_s, verbs=frozenset({"update"})))
    before = len(double.requests())
    with pytest.raises(OutcomeUnknown, match="no answer"):
        impatient.compare_and_set("k", {"v": 2}, expected_revision=revision)
    assert time.monotonic() - started_s < HANG_CEILING_S
    impatient.close()
    # One PUT, never repeated: a retry would meet our own write and report Conflict.
    assert [r.verb for r in double.requests()[before:]] == ["update"]
    double.heal()
    assert _value(store, "k") == {"v": 2}  # the write was carried out before the hang


def test_a_stopped_api_server_is_unavailable_for_reads_and_writes(namespace: str) -> None:
    with KubeApiDouble() as own:
        own.add_namespace(namespace)
        store = KubernetesStore(own.configuration(), namespace=namespace)
        revision = store.create("k", {"v": 1})
    started_s = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        store.get("k")
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        store.compare_and_set("k", {"v": 2}, expected_revision=revision)
    assert time.monotonic() - started_s < HANG_CEILING_S
    store.close()


@pytest.fixture
def unreachable_port() -> Iterator[int]:
    """A port whose connections are never accepted: its listen queue is full, so the
    kernel drops further connection attempts and a client's connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


def test_an_unreachable_api_server_is_unavailable_within_the_connect_timeout(
    double: KubeApiDouble, unreachable_port: int
) -> None:
    configuration = double.configuration()
    configuration.host = f"http://127.0.0.1:{unreachable_port}"
    started_s = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"no connection within 0\.2 s") as raised:
        KubernetesStore(configuration, namespace="bfm", connect_timeout_s=0.2)
    assert time.monotonic() - started_s < HANG_CEILING_S
    assert f"127.0.0.1:{unreachable_port}" in str(raised.value)


def test_a_missing_namespace_is_unavailable_naming_the_fix(double: KubeApiDouble) -> None:
    store = KubernetesStore(double.configuration(), namespace="nowhere")
    assert store.get("k") is None and store.list("") == []  # as kube-apiserver answers
    with pytest.raises(StoreUnavailable, match="kubectl create namespace nowhere"):
        store.create("k", {"v": 1})


def test_a_closed_store_refuses_calls_without_sending(
    store: KubernetesStore, double: KubeApiDouble
) -> None:
    store.close()
    before = len(double.requests())
    with pytest.raises(StoreUnavailable, match="was closed"):
        store.list("")
    assert len(double.requests()) == before


# --- the RBAC list ---------------------------------------------------------------------------


def _uses(requests: list[ApiRequest]) -> set[tuple[str, str | None, str | None]]:
    return {(r.verb, r.group, r.resource) for r in requests}


def test_the_store_uses_exactly_the_verbs_and_resources_in_the_rbac_list(
    double: KubeApiDouble, namespace: str
) -> None:
    before = len(double.requests())
    store = KubernetesStore(double.configuration(), namespace=namespace)
    for key in (lease_key("a"), ownership_key("eap")):
        revision = store.create(key, {"v": 1})
        store.get(key)
        revision = store.compare_and_set(key, {"v": 2}, expected_revision=revision)
        store.delete(key, expected_revision=revision)
    store.wait_for_change("", {}, timeout_s=0)
    store.close()
    used = _uses(double.requests()[before:])
    assert used == granted(used_by=STORE_MODULE)  # nothing outside the list, nothing unused
    assert all(allowed(group or "", resource or "", verb) for verb, group, resource in used)
    assert not allowed("", "configmaps", "patch")


def test_a_component_pod_uses_exactly_the_components_rows_of_the_rbac_list(
    double: KubeApiDouble, namespace: str
) -> None:
    """A reference backbone pod opens the store and watches ownership: its own service
    account's Role (``account=COMPONENTS``) is all it needs, and all of it is used."""
    writer = KubernetesStore(double.configuration(), namespace=namespace)
    writer.create(ownership_key("eap"), {"v": 1})
    before = len(double.requests())
    reader = KubernetesStore(double.configuration(), namespace=namespace)
    watch = OwnershipWatch(reader, ("eap", "eep"), interval_s=0.05)
    watch.start()
    try:
        for _ in range(100):  # bounded: 100 x 50 ms
            if watch.polls >= 2:
                break
            time.sleep(0.05)
    finally:
        watch.stop()
        reader.close()
        writer.close()
    assert watch.polls >= 2
    used = _uses(double.requests()[before:])
    assert used == granted(account=COMPONENTS)
    assert all(
        allowed(group or "", resource or "", verb, account=COMPONENTS)
        for verb, group, resource in used
    )
    assert not allowed("", "configmaps", "get", account=COMPONENTS)  # never asked for
    assert not allowed("", "pods", "create", account=COMPONENTS)


def test_the_rbac_list_renders_as_role_rules() -> None:
    assert role_rules(used_by=STORE_MODULE) == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "create", "update", "delete"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "create", "update", "delete"],
        },
    ]
    assert role_rules(namespaced=False, used_by=STORE_MODULE) == []
    assert role_rules(namespaced=False) == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "patch"]}
    ]
    assert role_rules(namespace="kube-node-lease") == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list"]}
    ]


# --- the double itself -----------------------------------------------------------------------


def test_the_double_selects_by_label_as_kube_apiserver_does(
    double: KubeApiDouble, namespace: str
) -> None:
    core = client.CoreV1Api(client.ApiClient(double.configuration()))
    for name, labels in [("a", {"k": "1", "t": "x"}), ("b", {"k": "2"}), ("c", {})]:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        listed = core.list_namespaced_config_map(namespace, label_selector=selector)
        return [item.metadata.name for item in listed.items]

    assert names("") == ["a", "b", "c"]
    assert names("k=1") == names("k==1") == ["a"]
    assert names("k!=1") == ["b", "c"]
    assert names("k") == ["a", "b"] and names("!k") == ["c"]
    assert names("k in (1, 2),t") == ["a"] and names("k notin (1)") == ["b", "c"]
    with pytest.raises(client.ApiException) as raised:
        names("k=(")
    assert raised.value.status == 400
