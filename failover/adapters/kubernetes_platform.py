"""The Kubernetes Platform: each component instance is a bare Pod, sites are node zones.

The official ``kubernetes`` client; what the pods, labels and node facts look like is
:mod:`failover.adapters.kubernetes_pods`, and ``docs/kubernetes.md`` has the tables.

- ``start`` creates a new pod (a new name: the ``instance_id``) pinned to the site's zone;
  ``stop`` deletes it with the grace period ``timeout_s`` and returns once the pod object
  is gone (the kubelet removes it after the container ended); a pod still there after the
  grace period is deleted with grace 0 (forced), as the local platform kills a child that
  ignored SIGTERM. ``restart`` is a stop and a start. Pods never restart by themselves
  (``restartPolicy: Never``): the supervisor decides (the ``Platform`` contract).
- ``set_version`` of a running instance *evicts* its pod through the Eviction API, so a
  PodDisruptionBudget can refuse it (HTTP 429): the platform retries until ``timeout_s``
  and then raises ``PlatformError`` naming the budget, with the old pod still running.
  ``drain_site`` cordons the site's nodes and evicts every pod on them the same way (an
  OS update's node drain); ``uncordon_site`` lets pods be scheduled there again.
- ``route`` sets the ``SERVING_LABEL`` of every pod of the site at once (the serving
  Services select ``"true"``, so a fenced site leaves their endpoints), and new pods get
  the site's current value. ``routing`` answers from what this platform last set.
- ``sites`` and ``node_views``: sites from the nodes' zone labels, each node judged by its
  ``Ready`` condition and its ``kube-node-lease`` Lease (no change for the Lease's
  duration on the injected clock: unreachable), and, where BFM's own heartbeats are given
  (``heartbeats``: site -> heard within its deadline, or None when unknown), a site whose
  heartbeats stopped is unreachable at once: they are much faster than the kubelet's 40 s.
- ``isolate``/``release`` put and take the ``node.kubernetes.io/out-of-service`` taint
  on every node of a site (:mod:`failover.runtime.site_isolation` decides when), each
  node a read and a patch carrying its ``resourceVersion`` (a 409 is read again).

Errors: an unknown site or component is a ``ValueError`` naming it; an API server that
cannot be reached, an answer 5xx, or a refusal (403: an RBAC grant of
:mod:`failover.adapters.kubernetes_rbac` is missing) is a ``PlatformError`` naming the
operation and the fix. Waits for the API (a pod to go) are bounded and use real time: the
kubelet works in real time, whatever clock the caller injects.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from failover.adapters import kubernetes_pods as pods
from failover.adapters.platform_sites import PlatformSites
from failover.adapters.system_clock import SystemClock
from failover.core.topology import Topology
from failover.core.versions import DEFAULT_VERSION, check_version
from failover.ports import (
    Clock,
    Instance,
    InstanceState,
    NodeFacts,
    PlatformError,
    SiteFacts,
    SiteNodes,
)

STOP_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.05  # while waiting for a pod to go
GONE_MARGIN_S = 10.0  # after a forced delete: the kubelet's last word
CONFLICT_RETRIES = 5
USER_AGENT = "bfm-platform"


class _Missing(Exception):
    """The API answered 404."""


class _Refused(Exception):
    """The API answered 409 or 429 (a conflict, or a disruption budget)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Slot:
    """One instance's bookkeeping: the pod it runs as, and what BFM asked of it."""

    version: str
    pod: str = ""  # the current (or last) pod's name; "" never started
    wanted: bool = False  # asked to run: its end is a crash
    restarts: int = 0
    given_up: bool = False
    # Held through each change of this instance (start, stop, version change, ...).
    changing: threading.Lock = field(default_factory=threading.Lock)


class KubernetesPlatform:
    """Platform port on Pods and Nodes in one namespace (see the module docstring)."""

    def __init__(
        self,
        configuration: client.Configuration,
        topology: Topology,
        *,
        namespace: str,
        sites: Collection[str] | None = None,
        template: pods.PodTemplate | None = None,
        versions: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        heartbeats: Callable[[str], bool | None] | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.topology, self.namespace = topology, namespace
        self.names = PlatformSites(topology, sites, versions)
        self.managed = self.names.managed
        self.template = template or pods.PodTemplate()
        self.clock = clock or SystemClock()
        self.heartbeats = heartbeats
        own = copy.deepcopy(configuration)
        own.retries = False
        self._host = str(own.host)
        self._timeouts_s = (CONNECT_TIMEOUT_S, request_timeout_s)
        api = client.ApiClient(own)
        api.user_agent = USER_AGENT  # kube-apiserver's audit log names who asked
        self._core = client.CoreV1Api(api)
        self._coordination = client.CoordinationV1Api(api)
        self._lock = threading.RLock()
        self._closed = False
        self._slots = {
            (s, c): _Slot(version=(versions or {}).get(c, DEFAULT_VERSION))
            for s in self.managed
            for c in topology.components
        }
        self._serving = dict.fromkeys(topology.workers, True)
        self._leases = pods.LeaseWatch()

    # --- instances -------------------------------------------------------------------

    def start(self, site: str, component: str) -> Instance:
        slot = self._slot(site, component)
        with slot.changing:
            self._refuse_closed(f"cannot start {site}/{component}")
            current = self._instance(site, component)
            if current.state is not InstanceState.RUNNING:
                self._create(site, component, slot)
            slot.wanted, slot.given_up = True, False
            return self._instance(site, component)

    def stop(self, site: str, component: str, *, timeout_s: float = STOP_TIMEOUT_S) -> Instance:
        slot = self._slot(site, component)
        with slot.changing:
            slot.wanted = False
            self._delete_and_wait(slot.pod, timeout_s)
            return self._instance(site, component)

    def stop_site(self, site: str, *, timeout_s: float = STOP_TIMEOUT_S) -> list[Instance]:
        self.names.check_managed(site)
        slots = [self._slots[(site, c)] for c in sorted(self.topology.components)]
        for slot in slots:  # every pod asked to go first, then waited for: in parallel
            with slot.changing:
                slot.wanted = False
                if slot.pod:
                    self._delete(slot.pod, grace_s=timeout_s)
        for slot in slots:
            with slot.changing:
                self._delete_and_wait(slot.pod, timeout_s)
        return self.instances(site)

    def restart(self, site: str, component: str, *, timeout_s: float = STOP_TIMEOUT_S) -> Instance:
        slot = self._slot(site, component)
        with slot.changing:
            self._refuse_closed(f"cannot restart {site}/{component}")
            slot.wanted = False  # its end is asked for, not a crash
            self._delete_and_wait(slot.pod, timeout_s)
            self._refuse_closed(f"cannot restart {site}/{component}")
            self._create(site, component, slot)  # at the slot's version: restarts keep it
            slot.wanted, slot.given_up = True, False
            slot.restarts += 1
            return self._instance(site, component)

    def give_up(self, site: str, component: str) -> Instance:
        """The failed pod stays for ``kubectl logs``; nothing is started again."""
        slot = self._slot(site, component)
        with slot.changing:
            slot.given_up, slot.wanted = True, False
            return self._instance(site, component)

    def set_version(
        self, site: str, component: str, version: str, *, timeout_s: float = STOP_TIMEOUT_S
    ) -> Instance:
        slot = self._slot(site, component)
        check_version(version)
        with slot.changing:
            if version == slot.version:
                return self._instance(site, component)
            running = self._instance(site, component).state is InstanceState.RUNNING
            if not running:
                slot.version = version
                return self._instance(site, component)
            self._refuse_closed(f"cannot change {site}/{component} to version {version}")
            self._evict(slot.pod, timeout_s)  # may refuse (a budget): nothing changed then
            # STOPPED, not EXITED, until the new pod runs: the supervisor leaves it be.
            slot.version, slot.wanted = version, False
            self._wait_gone(slot.pod, timeout_s)
            self._refuse_closed(f"cannot start {site}/{component} at version {version}")
            self._create(site, component, slot)
            slot.wanted = True
            return self._instance(site, component)

    def version(self, site: str, component: str) -> str:
        return self._slot(site, component).version

    def instance(self, site: str, component: str) -> Instance:
        self._slot(site, component)
        return self._instance(site, component)

    def instances(self, site: str) -> list[Instance]:
        self.names.check_managed(site)
        listed = self._list_pods(pods.selector(self.template.platform, site))
        by_name = {p["metadata"]["name"]: p for p in listed}
        return [
            self._as_instance(site, c, by_name.get(self._slots[(site, c)].pod))
            for c in sorted(self.topology.components)
        ]

    # --- routing -----------------------------------------------------------------------

    def route(self, site: str, *, serving: bool) -> None:
        self.names.check_entry_point(site)
        with self._lock:
            self._serving[site] = serving
        label = {"metadata": {"labels": {pods.SERVING_LABEL: "true" if serving else "false"}}}
        for pod in self._list_pods(pods.selector(self.template.platform, site)):
            try:
                self._send(
                    "route a pod",
                    self._core.patch_namespaced_pod,
                    pod["metadata"]["name"],
                    self.namespace,
                    label,
                )
            except _Missing:
                continue  # gone meanwhile: nothing left to route

    def routing(self, site: str) -> bool:
        self.names.check_entry_point(site)
        with self._lock:
            return self._serving[site]

    # --- nodes and sites ---------------------------------------------------------------

    def node_views(self) -> list[pods.NodeView]:
        """Every node with a zone, judged by its Ready condition and its node Lease."""
        nodes = self._send("list nodes", self._core.list_node).get("items") or []
        leases = (
            self._send(
                "list node leases",
                self._coordination.list_namespaced_lease,
                pods.NODE_LEASE_NAMESPACE,
            ).get("items")
            or []
        )
        by_node = {str(lease["metadata"]["name"]): lease for lease in leases}
        with self._lock:
            return pods.node_views(nodes, by_node, self._leases, self.clock.monotonic())

    def sites(self) -> list[SiteFacts]:
        views = self.node_views()
        facts = []
        for s in sorted(self.topology.sites, key=lambda s: s.name):
            heard = self.heartbeats(s.name) if self.heartbeats is not None else None
            nodes = tuple(
                NodeFacts(name=v.name, reachable=v.up and heard is not False)
                for v in views
                if v.site == s.name
            )
            facts.append(
                SiteFacts(
                    site=s.name,
                    role=s.role.value,
                    components=self.topology.components if self.topology.is_worker(s.name) else (),
                    nodes=nodes,
                )
            )
        return facts

    def site_nodes(self) -> list[SiteNodes]:
        """Each zone's nodes as Kubernetes alone sees them (``NodeIsolation``)."""
        views = self.node_views()
        return [
            SiteNodes(
                site=site,
                nodes=len(mine),
                up=sum(v.up for v in mine),
                isolated=sum(v.out_of_service for v in mine),
            )
            for site in sorted({v.site for v in views})
            for mine in [[v for v in views if v.site == site]]
        ]

    def isolate(self, site: str) -> list[str]:
        """Taint every node of ``site`` out-of-service; the nodes that were changed."""
        return self._taint(site, present=True)

    def release(self, site: str) -> list[str]:
        """Take the out-of-service taint off every node of ``site``; the nodes changed."""
        return self._taint(site, present=False)

    def drain_site(self, site: str, *, timeout_s: float = 60.0) -> list[str]:
        """Cordon the site's nodes and evict BFM's pods there, each within ``timeout_s``
        (a disruption budget that keeps refusing: ``PlatformError`` naming it). The
        evicted instances are ``STOPPED``; returns the evicted pods' names."""
        self.names.check_managed(site)
        self._cordon(site, unschedulable=True)
        evicted = []
        for c in sorted(self.topology.components):
            slot = self._slots[(site, c)]
            with slot.changing:
                if self._instance(site, c).state is not InstanceState.RUNNING:
                    continue
                self._evict(slot.pod, timeout_s)
                slot.wanted = False
                self._wait_gone(slot.pod, timeout_s)
                evicted.append(slot.pod)
        return evicted

    def uncordon_site(self, site: str) -> None:
        self.names.check_managed(site)
        self._cordon(site, unschedulable=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for site in self.managed:
            self.stop_site(site)

    # --- API requests ------------------------------------------------------------------

    def _send(
        self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """One request; its answer as JSON. 404: ``_Missing``; 409/429: ``_Refused``;
        anything else that fails: ``PlatformError`` naming ``what``."""
        try:
            response = call(
                *args, _preload_content=False, _request_timeout=self._timeouts_s, **kwargs
            )
            try:
                raw = response.data
            finally:
                response.release_conn()
        except ApiException as exc:
            status, message = int(exc.status or 0), _status_message(exc)
            if status == 404:
                raise _Missing(message) from None
            if status in (409, 429):
                raise _Refused(status, message) from None
            fix = (
                "grant the service account the verbs in failover/adapters/kubernetes_rbac.py"
                if status in (401, 403)
                else "is the API server up?"
            )
            raise PlatformError(
                f"bfm: could not {what} on the Kubernetes API at {self._host} "
                f"(HTTP {status}: {message}); {fix}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PlatformError(
                f"bfm: could not {what}: the Kubernetes API at {self._host} did not answer "
                f"({type(exc).__name__}); is the API server up?"
            ) from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PlatformError(f"bfm: could not {what}: the API answered {raw[:80]!r}")
        return answer

    def _list_pods(self, selector: str) -> list[dict[str, Any]]:
        answer = self._send(
            "list pods", self._core.list_namespaced_pod, self.namespace, label_selector=selector
        )
        return [p for p in answer.get("items") or [] if isinstance(p, dict)]

    def _read_pod(self, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        try:
            return self._send("read a pod", self._core.read_namespaced_pod, name, self.namespace)
        except _Missing:
            return None

    def _create(self, site: str, component: str, slot: _Slot) -> None:
        name = pods.pod_name(site, component)
        with self._lock:
            serving = self._serving[site]
        body = self.template.body(name, site, component, slot.version, serving=serving)
        try:
            self._send("create a pod", self._core.create_namespaced_pod, self.namespace, body)
        except (_Missing, _Refused) as exc:
            raise PlatformError(f"cannot start {site}/{component}: {exc}") from None
        old, slot.pod = slot.pod, name
        if old:  # the dead predecessor's object, kept until now for its exit code
            self._delete(old, grace_s=0)

    def _delete(self, name: str, *, grace_s: float) -> None:
        grace = max(math.ceil(grace_s), 0)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": grace}
        try:
            self._send(
                "delete a pod",
                self._core.delete_namespaced_pod,
                name,
                self.namespace,
                grace_period_seconds=grace,
                body=body,
            )
        except _Missing:
            pass
        except _Refused as exc:
            raise PlatformError(f"cannot delete pod {name}: {exc}") from None

    def _delete_and_wait(self, name: str, timeout_s: float) -> None:
        """Delete with grace ``timeout_s``; forced (grace 0) when still there after it."""
        if not name:
            return
        self._delete(name, grace_s=timeout_s)
        if self._gone_within(name, timeout_s + 1.0):
            return
        self._delete(name, grace_s=0)
        self._wait_gone(name, GONE_MARGIN_S)

    def _wait_gone(self, name: str, timeout_s: float) -> None:
        if not self._gone_within(name, timeout_s + GONE_MARGIN_S):
            raise PlatformError(
                f"pod {name} in namespace {self.namespace} was still there "
                f"{timeout_s + GONE_MARGIN_S:g} s after its deletion; is its node's kubelet "
                "running?"
            )

    def _gone_within(self, name: str, timeout_s: float) -> bool:
        deadline_s = time.monotonic() + timeout_s
        while True:
            if self._read_pod(name) is None:
                return True
            if time.monotonic() >= deadline_s:
                return False
            time.sleep(POLL_INTERVAL_S)

    def _evict(self, name: str, timeout_s: float) -> None:
        """Evict through the Eviction API; a disruption budget's 429 is retried until
        ``timeout_s``, then ``PlatformError`` naming it."""
        grace = max(math.ceil(timeout_s), 0)
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": self.namespace},
            "deleteOptions": {"gracePeriodSeconds": grace},
        }
        deadline_s = time.monotonic() + timeout_s
        while True:
            try:
                self._send(
                    "evict a pod",
                    self._core.create_namespaced_pod_eviction,
                    name,
                    self.namespace,
                    body,
                )
                return
            except _Missing:
                return  # already gone
            except _Refused as exc:
                if time.monotonic() >= deadline_s:
                    raise PlatformError(
                        f"cannot evict pod {name}: {exc} (HTTP {exc.status}, still after "
                        f"{timeout_s:g} s); wait for the budget's pods to be ready, or "
                        "give the step more time"
                    ) from None
            time.sleep(POLL_INTERVAL_S * 4)

    def _nodes(self) -> list[dict[str, Any]]:
        items = self._send("list nodes", self._core.list_node).get("items") or []
        return [n for n in items if isinstance(n, dict)]

    def _site_nodes(self, site: str) -> list[dict[str, Any]]:
        self.names.check_site(site)
        return [n for n in self._nodes() if pods.node_site(n) == site]

    def _taint(self, site: str, *, present: bool) -> list[str]:
        changed = []
        for node in self._site_nodes(site):
            name = str(node["metadata"]["name"])
            if self._patch_node(name, node, lambda n: _taints_patch(n, present=present)):
                changed.append(name)
        return changed

    def _cordon(self, site: str, *, unschedulable: bool) -> None:
        def patch(node: Mapping[str, Any]) -> dict[str, Any] | None:
            if bool((node.get("spec") or {}).get("unschedulable")) == unschedulable:
                return None
            return {"spec": {"unschedulable": unschedulable}}

        for node in self._site_nodes(site):
            self._patch_node(str(node["metadata"]["name"]), node, patch)

    def _patch_node(
        self,
        name: str,
        node: Mapping[str, Any],
        change: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    ) -> bool:
        """Patch a node with ``change(node)`` (None: nothing to do), carrying its
        resourceVersion; a 409 reads it again. Whether it was changed."""
        for _ in range(CONFLICT_RETRIES):
            body = change(node)
            if body is None:
                return False
            body["metadata"] = {"resourceVersion": node["metadata"]["resourceVersion"]}
            try:
                self._send("patch a node", self._core.patch_node, name, body)
                return True
            except _Refused:
                again = [n for n in self._nodes() if n["metadata"]["name"] == name]
                if not again:
                    return False
                node = again[0]
            except _Missing:
                return False
        raise PlatformError(
            f"node {name} kept changing under {CONFLICT_RETRIES} patches; try again"
        )

    # --- bookkeeping -------------------------------------------------------------------

    def _refuse_closed(self, what: str) -> None:
        with self._lock:
            if self._closed:
                raise PlatformError(f"{what}: the platform was closed")

    def _instance(self, site: str, component: str) -> Instance:
        slot = self._slots[(site, component)]
        return self._as_instance(site, component, self._read_pod(slot.pod))

    def _as_instance(self, site: str, component: str, pod: dict[str, Any] | None) -> Instance:
        slot = self._slots[(site, component)]
        shown = pods.pod_state(pod, wanted=slot.wanted and bool(slot.pod))
        state = InstanceState.GIVEN_UP if slot.given_up else shown.state
        return Instance(
            site=site,
            component=component,
            state=state,
            restarts=slot.restarts,
            pid=None,
            instance_id=slot.pod,
            exit_code=shown.exit_code,
            version=slot.version,
        )

    def _slot(self, site: str, component: str) -> _Slot:
        self.names.check_managed(site)
        slot = self._slots.get((site, component))
        if slot is None:
            raise self.names.unknown_component(site, component)
        return slot


def _taints_patch(node: Mapping[str, Any], *, present: bool) -> dict[str, Any] | None:
    taints = pods.taints_with_out_of_service(node, present=present)
    return None if taints is None else {"spec": {"taints": taints}}


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return str(exc.reason or "no message")


if TYPE_CHECKING:
    from failover.ports import NodeIsolation, Platform

    def _conforms(platform: KubernetesPlatform) -> Platform:
        return platform

    def _isolates(platform: KubernetesPlatform) -> NodeIsolation:
        return platform
