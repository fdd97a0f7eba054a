"""A kubelet double for tests: scheduler, kubelets and taint manager over the API double.

``KubeletDouble`` runs one bounded background thread that plays, for the pods of one
namespace, the parts of a cluster that the Kubernetes API double (``kube_double.py``) does
not: it talks to the double over real HTTP with the official ``kubernetes`` client, as
the real components talk to kube-apiserver, so whatever an adapter sees comes through the
API. Each poll (``poll_interval_s``) it does what these components would do:

- the scheduler: a pod without ``spec.nodeName`` is bound (``pods/binding``) to a node
  whose labels satisfy ``spec.nodeSelector``, whose Ready condition is True, that is not
  ``spec.unschedulable`` (unless the pod tolerates ``node.kubernetes.io/unschedulable``),
  not down (``node_down``) and whose NoSchedule/NoExecute taints the pod tolerates; the
  node with the fewest of the namespace's pods wins, then the first by name. Without one
  the pod stays Pending with condition PodScheduled False, reason Unschedulable.
- the kubelet of every node that is not down: a bound pod's first container is started as
  a local process (``command + args``, ``python``/``python3`` meaning this interpreter;
  env: the given base env plus the container's ``env`` values; output to a log file under
  a temporary directory; ``child_setup()`` so it dies with the test) and reported Running
  and Ready through ``pods/status``. A process that ends is reported Succeeded (exit 0)
  or Failed, with ``state.terminated`` (a signal N as exit code 128+N and ``signal: N``,
  as a container runtime reports it). Containers are never restarted (``restartPolicy``
  Never is all BFM uses). A terminating pod (``deletionTimestamp``) gets SIGCONT and
  SIGTERM, SIGKILL after ``deletionGracePeriodSeconds``, and once the process is reaped
  its final status and a DELETE with grace 0 (uid precondition). A pod that vanished from
  the API while its process runs gets SIGKILL. Node Leases in ``kube-node-lease`` are
  renewed every ``node_lease_renew_s`` and the Ready condition's ``lastHeartbeatTime``
  every ``node_status_report_s`` (its status is left as the API has it).
- the taint manager: a pod on a node with a NoExecute taint it does not tolerate (or
  tolerates for ``tolerationSeconds`` that have passed since the taint's ``timeAdded``)
  is deleted, with grace 0 when the node is down or not Ready (as the out-of-service taint
  force-deletes), else gracefully; and, as the pod garbage collector does, a terminating
  pod on a not-Ready node tainted ``node.kubernetes.io/out-of-service`` is force-deleted.

Test hooks play the rest: ``node_down`` (a power loss: every process of the node's pods
is SIGKILLed at once, its lease and pod status stop, the pod objects stay as they were),
``set_node_ready`` (what the node-lifecycle controller writes after its grace period,
when the test decides: the Ready condition, the not-ready/unreachable taints, and Ready
False on the node's pods), ``node_up`` (power back: the kubelet renews again, reports
Ready True and, as a rebooted kubelet does for containers it cannot find, reports the
pods whose processes died with the node Failed with ``ContainerStatusUnknown``, exit code
137), ``pid``, ``pause`` (SIGSTOP), ``processes_gone`` and ``stop``.

Not modelled: init containers, more than one container, images (only the command runs),
probes, restarts, resources, volumes, ``valueFrom`` env, networking (every pod and host IP
is 127.0.0.1), the node-lifecycle controller's own timing (the test calls
``set_node_ready``), preemption, affinity and topology spread, and pods of other
namespaces. A ``deletionTimestamp`` is honoured from when this double first sees it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from failover.adapters.local_platform import child_setup
from support.kube_double import KubeApiDouble

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
MAX_LIFETIME_S = 30 * 60.0
REQUEST_TIMEOUT_S = 3.0
JOIN_TIMEOUT_S = 10.0
REAP_TIMEOUT_S = 5.0
LOST_EXIT_CODE = 137  # what the kubelet reports for a container it can no longer find
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NODE_CONDITION_TAINTS = {
    "False": "node.kubernetes.io/not-ready",
    "Unknown": "node.kubernetes.io/unreachable",
}
TERMINATED = ("Succeeded", "Failed")
# The User-Agent of every request of this double (``ApiRequest.user_agent``): what an RBAC
# test filters out, as the real authorizer tells the kubelet's user from an adapter's.
KUBELET_USER_AGENT = "kubelet-double"

log = logging.getLogger(__name__)


def micro_time(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime, e.g. ``2026-11-27T01:02:03.456789Z``."""
    moment = moment or datetime.datetime.now(tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _body(response: Any) -> Any:
    """The JSON of a raw answer (a call with ``_preload_content=False``)."""
    return json.loads(response.data)


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Whether one toleration tolerates one taint (key, operator Exists/Equal, value, effect)."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if (toleration.get("operator") or "Equal") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (
        taint.get("value") or ""
    )


def _condition(obj: Mapping[str, Any], kind: str) -> str | None:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return str(found.get("status"))
    return None


@dataclass
class _Container:
    """The process this double runs for one pod (by uid), and what it reported of it."""

    uid: str
    pod: str
    node: str
    name: str
    image: str
    process: subprocess.Popen[bytes] | None
    started_at: str
    term_sent_s: float | None = None  # monotonic time of the SIGTERM
    reported: bool = False  # the end was reported (or there is nothing more to report)
    lost: bool = False  # killed by node_down: reported when the node comes back

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, number: int) -> None:
        if self.alive() and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(number)


class KubeletDouble:
    """Scheduler, kubelets and taint manager for one namespace's pods (module docstring)."""

    def __init__(
        self,
        double: KubeApiDouble,
        namespace: str,
        *,
        env: Mapping[str, str] | None = None,
        poll_interval_s: float = 0.05,
        node_lease_renew_s: float = 1.0,
        node_status_report_s: float = 10.0,
        max_lifetime_s: float = MAX_LIFETIME_S,
    ) -> None:
        double.add_namespace(LEASE_NAMESPACE)  # every cluster has it
        self._host = double.url
        self._namespace = namespace
        self._env = dict(os.environ if env is None else env)
        self._poll_interval_s = poll_interval_s
        self._lease_renew_s = node_lease_renew_s
        self._status_report_s = node_status_report_s
        self._max_lifetime_s = max_lifetime_s
        configuration = double.configuration()
        configuration.retries = 0  # fail fast: the loop polls again anyway
        self._api = client.ApiClient(configuration)  # the background thread's
        self._hook_api = client.ApiClient(double.configuration())  # the test thread's
        self._api.user_agent = self._hook_api.user_agent = KUBELET_USER_AGENT
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._containers: dict[str, _Container] = {}  # by pod uid
        self._uids: dict[str, str] = {}  # pod name -> uid of the pod of that name last seen
        self._down: set[str] = set()
        self._renewed_s: dict[str, float] = {}  # node -> monotonic time of the lease renewal
        self._reported_s: dict[str, float] = {}  # node -> monotonic time of the heartbeat
        self._taint_seen_s: dict[tuple[str, str, str], float] = {}
        self._log_dir = Path(tempfile.mkdtemp(prefix="kubelet-double-"))
        self.last_error: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> KubeletDouble:
        self._thread = threading.Thread(target=self._run, name="kubelet-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, SIGKILL and reap every process it started, remove its logs."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
        with self._lock:
            for container in self._containers.values():
                self._kill(container)
            self._containers.clear()
        self._api.close()  # type: ignore[no-untyped-call]
        self._hook_api.close()  # type: ignore[no-untyped-call]
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> KubeletDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test hooks ---------------------------------------------------------------------------

    def pid(self, pod_name: str) -> int | None:
        """The pid of the running process of the pod of that name (None: none runs)."""
        with self._lock:
            container = self._containers.get(self._uids.get(pod_name, ""))
            if container is None or container.process is None or not container.alive():
                return None
            return container.process.pid

    def log_path(self, pod_name: str) -> Path | None:
        """Where the output of the pod's process goes (None: no process started)."""
        with self._lock:
            container = self._containers.get(self._uids.get(pod_name, ""))
            return None if container is None else self._log_file(container)

    def pause(self, pod_name: str) -> None:
        """SIGSTOP the pod's process (a hung container; SIGCONT comes with a deletion)."""
        with self._lock:
            container = self._containers.get(self._uids.get(pod_name, ""))
            if container is not None:
                container.signal(signal.SIGSTOP)

    def processes_gone(self, pod_name: str) -> bool:
        """True when no process this double started for a pod of that name still runs."""
        with self._lock:
            return not any(c.alive() for c in self._containers.values() if c.pod == pod_name)

    def node_down(self, node: str) -> None:
        """A power loss: SIGKILL the node's processes at once; lease and status stop."""
        with self._lock:
            self._down.add(node)
            on_node = [c for c in self._containers.values() if c.node == node and c.alive()]
            for container in on_node:
                container.signal(signal.SIGKILL)
            for container in on_node:
                self._reap(container)
                container.lost = not container.reported

    def node_up(self, node: str) -> None:
        """Power back: renew the lease, Ready True; pods that died with it are reported."""
        with self._lock:
            self._down.discard(node)
            self._renewed_s.pop(node, None)
            self._reported_s.pop(node, None)
        self.set_node_ready(node, "True")

    def set_node_ready(self, node: str, status: str) -> None:
        """Write what the node-lifecycle controller writes: condition, taints, pods unready."""
        if status not in ("True", "False", "Unknown"):
            raise ValueError(f"a Ready status is True, False or Unknown, not {status!r}")
        core = client.CoreV1Api(self._hook_api)
        reason = {"True": "KubeletReady", "False": "KubeletNotReady"}.get(
            status, "NodeStatusUnknown"
        )
        message = "Kubelet stopped posting node status." if status == "Unknown" else reason
        ready = {"type": "Ready", "status": status, "reason": reason, "message": message}
        ready["lastTransitionTime"] = _time()
        core.patch_node_status(
            node, {"status": {"conditions": [ready]}}, _request_timeout=REQUEST_TIMEOUT_S
        )
        self._set_condition_taints(core, node, status)
        if status != "True":
            for pod in self._pods(core):
                if pod["spec"].get("nodeName") == node and _condition(pod, "Ready") == "True":
                    unready = {"type": "Ready", "status": "False", "lastTransitionTime": _time()}
                    self._patch_status(core, pod, {"conditions": [unready]})

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        deadline_s = time.monotonic() + self._max_lifetime_s
        while not self._stopping.is_set() and time.monotonic() < deadline_s:
            with self._lock:
                try:
                    self._tick()
                except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                    self._complain(err)
            self._stopping.wait(self._poll_interval_s)

    def _complain(self, err: Exception) -> None:
        detail = str(getattr(err, "reason", err))  # urllib3's MaxRetryError wraps the cause
        if isinstance(err, ApiException):
            detail = f"HTTP {err.status} {err.reason}"
        message = (
            f"kubelet double: a request to the Kubernetes API double at {self._host} failed "
            f"({detail}); it keeps polling"
        )
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message

    def _tick(self) -> None:
        core = client.CoreV1Api(self._api)
        nodes = {n["metadata"]["name"]: n for n in self._items(core.list_node(**self._raw()))}
        pods = self._pods(core)
        self._uids.update({p["metadata"]["name"]: p["metadata"]["uid"] for p in pods})
        self._forget_vanished(pods)
        for pod in pods:
            node = nodes.get(pod["spec"].get("nodeName") or "")
            if node is None and not pod["spec"].get("nodeName"):
                self._schedule(core, pod, nodes, pods)
            elif node is not None and self._evicted_by_taints(core, pod, node):
                continue
            elif node is not None and node["metadata"]["name"] not in self._down:
                self._sync(core, pod)
        self._heartbeat(core, nodes)

    # -- scheduler ----------------------------------------------------------------------------

    def _schedule(
        self,
        core: client.CoreV1Api,
        pod: dict[str, Any],
        nodes: Mapping[str, dict[str, Any]],
        pods: list[dict[str, Any]],
    ) -> None:
        if pod["metadata"].get("deletionTimestamp") or pod["status"].get("phase") in TERMINATED:
            return
        fitting = [name for name in sorted(nodes) if self._fits(pod, nodes[name])]
        if not fitting:
            self._mark_unschedulable(core, pod, len(nodes))
            return
        load = {name: sum(1 for p in pods if p["spec"].get("nodeName") == name) for name in fitting}
        chosen = min(fitting, key=lambda name: (load[name], name))
        binding = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod["metadata"]["name"]),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=chosen),
        )
        core.create_namespaced_pod_binding(
            pod["metadata"]["name"], self._namespace, binding, **self._raw()
        )

    def _fits(self, pod: dict[str, Any], node: dict[str, Any]) -> bool:
        labels = node["metadata"].get("labels") or {}
        wanted = pod["spec"].get("nodeSelector") or {}
        if any(labels.get(key) != value for key, value in wanted.items()):
            return False
        if _condition(node, "Ready") != "True" or node["metadata"]["name"] in self._down:
            return False
        tolerations = pod["spec"].get("tolerations") or []
        taints = [
            t for t in node["spec"].get("taints") or [] if t.get("effect") != "PreferNoSchedule"
        ]
        if node["spec"].get("unschedulable"):
            taints.append({"key": UNSCHEDULABLE, "effect": "NoSchedule"})
        return all(any(tolerates(t, taint) for t in tolerations) for taint in taints)

    def _mark_unschedulable(self, core: client.CoreV1Api, pod: dict[str, Any], total: int) -> None:
        if _condition(pod, "PodScheduled") == "False":
            return
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": f"0/{total} nodes are available: none matches the pod's nodeSelector, "
            "is Ready and schedulable, and has only taints the pod tolerates.",
            "lastTransitionTime": _time(),
        }
        self._patch_status(core, pod, {"phase": "Pending", "conditions": [condition]})

    # -- taint manager ------------------------------------------------------------------------

    def _evicted_by_taints(
        self, core: client.CoreV1Api, pod: dict[str, Any], node: dict[str, Any]
    ) -> bool:
        """Delete the pod if a NoExecute taint says so; True when it was deleted."""
        name = node["metadata"]["name"]
        node_down = name in self._down or _condition(node, "Ready") != "True"
        taints = [t for t in node["spec"].get("taints") or [] if t.get("effect") == "NoExecute"]
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        if terminating and node_down and any(t.get("key") == OUT_OF_SERVICE for t in taints):
            self._delete(core, pod, grace_s=0)
            return True
        if terminating or not any(self._expired(pod, name, taint) for taint in taints):
            return False
        self._delete(core, pod, grace_s=0 if node_down else None)
        return True

    def _expired(self, pod: dict[str, Any], node: str, taint: dict[str, Any]) -> bool:
        """Whether the pod must leave the node for this NoExecute taint now."""
        matching = [t for t in pod["spec"].get("tolerations") or [] if tolerates(t, taint)]
        if any(t.get("tolerationSeconds") is None for t in matching) and matching:
            return False
        if not matching:
            return True
        key = (node, str(taint.get("key")), str(taint.get("value")))
        added_s = self._taint_seen_s.setdefault(key, time.time())
        if taint.get("timeAdded"):
            added_s = _parse_time(taint["timeAdded"])
        tolerated_s = min(float(t["tolerationSeconds"]) for t in matching)
        return time.time() >= added_s + tolerated_s

    # -- kubelet ------------------------------------------------------------------------------

    def _sync(self, core: client.CoreV1Api, pod: dict[str, Any]) -> None:
        uid, phase = pod["metadata"]["uid"], pod["status"].get("phase")
        container = self._containers.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            self._terminate(core, pod, container)
        elif container is None and phase in (None, "Pending"):
            self._start(core, pod)
        elif container is None and phase == "Running":
            self._report_lost(core, pod, None)  # a kubelet that finds no container for it
        elif container is not None and container.lost and not container.reported:
            self._report_lost(core, pod, container)
        elif container is not None and not container.reported and not container.alive():
            self._report_exit(core, pod, container)

    def _start(self, core: client.CoreV1Api, pod: dict[str, Any]) -> None:
        spec = pod["spec"]
        first = spec["containers"][0]
        argv = [*(first.get("command") or []), *(first.get("args") or [])]
        container = _Container(
            uid=pod["metadata"]["uid"],
            pod=pod["metadata"]["name"],
            node=spec["nodeName"],
            name=first["name"],
            image=first.get("image", ""),
            process=None,
            started_at=_time(),
        )
        self._containers[container.uid] = container
        if not argv:
            container.reported = True
            self._patch_status(
                core,
                pod,
                self._waiting(
                    container,
                    "CreateContainerError",
                    "the kubelet double runs only containers with a command",
                ),
            )
            return
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = dict(self._env)
        env.update(
            {e["name"]: str(e.get("value", "")) for e in first.get("env") or [] if "name" in e}
        )
        try:
            with self._log_file(container).open("wb") as output:
                container.process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=first.get("workingDir") or self._log_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=child_setup(),  # noqa: PLW1509 (prctl only, no locks)
                )
        except OSError as err:
            container.reported = True
            self._patch_status(core, pod, self._ended(container, 128, None, "StartError", str(err)))
            return
        self._patch_status(core, pod, self._running(container))

    def _terminate(
        self, core: client.CoreV1Api, pod: dict[str, Any], container: _Container | None
    ) -> None:
        if container is not None and container.alive():
            grace_s = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            if container.term_sent_s is None:
                container.signal(signal.SIGCONT)
                container.signal(signal.SIGTERM)
                container.term_sent_s = time.monotonic()
            elif time.monotonic() - container.term_sent_s >= grace_s:
                container.signal(signal.SIGKILL)
            return
        if container is not None and not container.reported:
            self._report_exit(core, pod, container)
        self._delete(core, pod, grace_s=0)

    def _report_exit(
        self, core: client.CoreV1Api, pod: dict[str, Any], container: _Container
    ) -> None:
        assert container.process is not None  # a container with nothing to report is reported
        code = container.process.returncode
        number = -code if code < 0 else None
        exit_code = 128 + number if number is not None else code
        reason = "Completed" if exit_code == 0 else "Error"
        container.reported = True
        self._patch_status(core, pod, self._ended(container, exit_code, number, reason, None))

    def _report_lost(
        self, core: client.CoreV1Api, pod: dict[str, Any], container: _Container | None
    ) -> None:
        if container is None:
            first = pod["spec"]["containers"][0]
            container = _Container(
                uid=pod["metadata"]["uid"],
                pod=pod["metadata"]["name"],
                node=pod["spec"]["nodeName"],
                name=first["name"],
                image=first.get("image", ""),
                process=None,
                started_at=_time(),
            )
            self._containers[container.uid] = container
        container.reported = True
        message = "The container could not be located when the pod was terminated"
        status = self._ended(container, LOST_EXIT_CODE, None, "ContainerStatusUnknown", message)
        self._patch_status(core, pod, status)

    def _forget_vanished(self, pods: list[dict[str, Any]]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        for uid, container in list(self._containers.items()):
            if uid not in present:
                self._kill(container)
                if not container.alive():
                    del self._containers[uid]

    # -- node leases and heartbeats -----------------------------------------------------------

    def _heartbeat(self, core: client.CoreV1Api, nodes: Mapping[str, dict[str, Any]]) -> None:
        now_s = time.monotonic()
        for name in sorted(set(nodes) - self._down):
            if now_s - self._renewed_s.get(name, -1e9) >= self._lease_renew_s:
                self._renew_lease(name)
                self._renewed_s[name] = now_s
            if now_s - self._reported_s.get(name, -1e9) >= self._status_report_s:
                beat = {"type": "Ready", "lastHeartbeatTime": _time()}
                core.patch_node_status(name, {"status": {"conditions": [beat]}}, **self._raw())
                self._reported_s[name] = now_s

    def _renew_lease(self, node: str) -> None:
        leases = client.CoordinationV1Api(self._api)
        spec = {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": micro_time(),
        }
        try:
            lease = _body(leases.read_namespaced_lease(node, LEASE_NAMESPACE, **self._raw()))
        except ApiException as err:
            if err.status != 404:
                raise
            body = {"metadata": {"name": node, "namespace": LEASE_NAMESPACE}, "spec": spec}
            self._tolerate(409, leases.create_namespaced_lease, LEASE_NAMESPACE, body)
            return
        lease["spec"] = {**(lease.get("spec") or {}), **spec}
        self._tolerate(409, leases.replace_namespaced_lease, node, LEASE_NAMESPACE, lease)

    def _set_condition_taints(self, core: client.CoreV1Api, node: str, status: str) -> None:
        """The node-lifecycle controller's not-ready/unreachable taints for this status."""
        for _ in range(5):  # a heartbeat may move the resourceVersion in between
            current = core.read_node(
                node, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
            found = _body(current)
            taints = [
                t
                for t in found["spec"].get("taints") or []
                if t.get("key") not in NODE_CONDITION_TAINTS.values()
            ]
            if status in NODE_CONDITION_TAINTS:
                key = NODE_CONDITION_TAINTS[status]
                taints += [
                    {"key": key, "effect": "NoSchedule"},
                    {"key": key, "effect": "NoExecute", "timeAdded": _time()},
                ]
            patch = {
                "metadata": {"resourceVersion": found["metadata"]["resourceVersion"]},
                "spec": {"taints": taints},
            }
            try:
                core.patch_node(
                    node, patch, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                )
                return
            except ApiException as err:
                if err.status != 409:
                    raise
        raise RuntimeError(f"kubelet double: could not update the taints of node {node}")

    # -- helpers ------------------------------------------------------------------------------

    def _pods(self, core: client.CoreV1Api) -> list[dict[str, Any]]:
        pods = self._items(core.list_namespaced_pod(self._namespace, **self._raw()))
        for pod in pods:
            pod.setdefault("status", {})
        return pods

    @staticmethod
    def _items(response: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _body(response)["items"]
        return items

    @staticmethod
    def _raw() -> dict[str, Any]:
        """Call options: the raw answer (dicts, not models), and a bounded wait."""
        return {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S}

    @staticmethod
    def _tolerate(status: int, call: Any, *args: Any) -> None:
        try:
            call(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as err:
            if err.status != status:
                raise

    def _patch_status(
        self, core: client.CoreV1Api, pod: dict[str, Any], status: dict[str, Any]
    ) -> None:
        name = pod["metadata"]["name"]
        self._tolerate(
            404, core.patch_namespaced_pod_status, name, self._namespace, {"status": status}
        )

    def _delete(self, core: client.CoreV1Api, pod: dict[str, Any], *, grace_s: int | None) -> None:
        options = client.V1DeleteOptions(
            grace_period_seconds=grace_s,
            preconditions=client.V1Preconditions(uid=pod["metadata"]["uid"]),
        )
        try:
            core.delete_namespaced_pod(
                pod["metadata"]["name"], self._namespace, body=options, **self._raw()
            )
        except ApiException as err:
            if err.status not in (404, 409):  # gone already, or a new pod of that name
                raise

    def _kill(self, container: _Container) -> None:
        container.signal(signal.SIGKILL)
        self._reap(container)

    @staticmethod
    def _reap(container: _Container) -> None:
        if container.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.process.wait(REAP_TIMEOUT_S)

    def _log_file(self, container: _Container) -> Path:
        return self._log_dir / f"{container.pod}-{container.uid[:8]}.log"

    @staticmethod
    def _conditions(ready: bool) -> list[dict[str, Any]]:
        status = "True" if ready else "False"
        now = _time()
        return [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
            {"type": "Ready", "status": status, "lastTransitionTime": now},
        ]

    def _running(self, container: _Container) -> dict[str, Any]:
        assert container.process is not None
        return {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": container.started_at,
            "conditions": self._conditions(ready=True),
            "containerStatuses": [
                {
                    **self._identity(container),
                    "ready": True,
                    "started": True,
                    "state": {"running": {"startedAt": container.started_at}},
                }
            ],
        }

    def _ended(
        self,
        container: _Container,
        exit_code: int,
        number: int | None,
        reason: str,
        message: str | None,
    ) -> dict[str, Any]:
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": container.started_at,
            "finishedAt": _time(),
        }
        if number is not None:
            terminated["signal"] = number
        if message:
            terminated["message"] = message
        return {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": self._conditions(ready=False),
            "containerStatuses": [
                {
                    **self._identity(container),
                    "ready": False,
                    "started": False,
                    "state": {"terminated": terminated},
                }
            ],
        }

    def _waiting(self, container: _Container, reason: str, message: str) -> dict[str, Any]:
        waiting = {"reason": reason, "message": message}
        return {
            "phase": "Pending",
            "conditions": self._conditions(ready=False),
            "containerStatuses": [
                {
                    **self._identity(container),
                    "ready": False,
                    "started": False,
                    "state": {"waiting": waiting},
                }
            ],
        }

    @staticmethod
    def _identity(container: _Container) -> dict[str, Any]:
        pid = container.process.pid if container.process is not None else 0
        return {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "containerID": f"kubelet-double://{container.uid}/{pid}",
            "restartCount": 0,
        }
