"""A Kubernetes API double for tests: kmock's ``KubernetesEmulator`` over real HTTP, extended.

It is a double, not an API server. ``KubeApiDouble`` serves ``ApiEmulator`` (a subclass of
``kmock.KubernetesEmulator``) with ``kmock.Server(emulator, port=0)`` on 127.0.0.1, inside
an asyncio loop on a background thread, and the official ``kubernetes`` client talks to
it over real HTTP (``KubeApiDouble.configuration()``). kmock supplies the HTTP server,
request parsing and recording, the Status error bodies, API discovery and its in-memory
object history (``emulator.objects``). Kinds not in ``SERVED`` keep kmock's own behaviour.

What kmock's emulator lacks and this module adds, for ConfigMaps and Leases (the objects
the store adapter uses) and for Pods, Nodes and PodDisruptionBudgets (what a Platform adapter
and the kubelet double of ``kubelet_double.py`` use), each because an adapter relies on it:

1. ``metadata.resourceVersion``: every write stamps the object with the next value of one
   counter for the whole server (as kube-apiserver does with etcd's revision); a list
   carries the current value. kmock sets none.
2. Optimistic concurrency: a PUT or PATCH whose ``metadata.resourceVersion`` differs from
   the stored one, and a DELETE whose ``preconditions.resourceVersion`` (or ``uid``)
   differs, are answered 409 ``Conflict`` and change nothing. kmock accepts stale patches
   and ignores delete preconditions.
3. PUT (replace): kmock has none (404). An update that changes nothing keeps the
   resourceVersion and is no write, as in kube-apiserver (why the adapter stamps a write
   id). A PUT of a missing object is 404 (nothing is created on update).
4. Label selectors on lists (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!key``);
   kmock ignores ``labelSelector``. List items come without ``apiVersion``/``kind``, sorted
   by namespace and name, as kube-apiserver sends them. Pods, Nodes and budgets also take
   a ``fieldSelector`` of ``path=value``/``path!=value`` terms (e.g. ``spec.nodeName=n1``).
5. Validation kube-apiserver does and kmock does not: namespaces must exist for a create
   of a namespaced kind (404 ``namespaces "x" not found``; tests add them with
   ``add_namespace``; Nodes are cluster-scoped), names are DNS-1123 subdomains, label and
   annotation keys and values are well-formed, annotations stay within 256 KiB and a
   ConfigMap's data within 1 MiB (422 ``Invalid``), a create carrying a resourceVersion or
   a body whose name or namespace differs from the URL's is 400; a malformed label
   selector is 400. A Pod needs containers with a name and an image, valid tolerations
   and nodeSelector; its spec is immutable but for what ValidatePodUpdate allows (images,
   activeDeadlineSeconds, added tolerations, terminationGracePeriodSeconds): else 422.
   Node taints and budget specs are checked too (these rules are in ``kube_rules.py``). A
   duplicate create is 409 with reason ``AlreadyExists`` (kmock's reason is its own).
6. ``uid``, ``namespace`` and ``creationTimestamp`` set on create (``generateName`` too).
   A Pod gets the defaults and admission that matter: ``restartPolicy`` Always,
   ``terminationGracePeriodSeconds`` 30, status ``phase: Pending``, and the
   DefaultTolerationSeconds tolerations (not-ready and unreachable, NoExecute, 300 s).
7. Faults for the error-mapping tests (``inject``): an HTTP status answered before or after
   the write is carried out, and a delay (a hung server).
8. A record of every request as an RBAC authorizer sees it (verb, group, resource,
   namespace: ``requests()``), for the test that the adapters use only the verbs and
   resources in ``failover.adapters.kubernetes_rbac``; a subresource is recorded as
   ``pods/eviction``, ``pods/status``, ``nodes/status``, ``pods/binding``. Without
   authentication the requester is known only by its User-Agent (``user_agent``): the
   kubelet double's requests can be told from an adapter's that way.
9. Patches by content type, as the official client sends them: strategic merge (lists
   merged by key where the Go types say so, e.g. ``status.conditions`` by type; every
   other list, e.g. ``spec.taints``, replaced whole), JSON merge (RFC 7386) and JSON patch
   (add, remove, replace, test). ConfigMaps and Leases keep kmock's merge.
10. Status subresources: ``pods/status`` and ``nodes/status`` (GET, PUT, PATCH) change only
    ``status``; a PUT or PATCH of the Pod or Node itself leaves ``status`` as it was. A
    budget's ``status`` is computed on every read (``kube_rules.pdb_status``).
11. Graceful deletion of scheduled Pods: a DELETE with a grace period (the body's
    DeleteOptions ``gracePeriodSeconds``, else the query's, else the pod's
    ``terminationGracePeriodSeconds``) sets ``deletionTimestamp`` (now + grace) and
    ``deletionGracePeriodSeconds``, a write, and keeps the object: the kubelet removes it
    with a DELETE of grace 0 once the containers are gone. A pod never scheduled (no
    ``spec.nodeName``) or already Succeeded/Failed goes at once; a second DELETE only
    shortens the grace period. Other kinds go at once.
12. ``pods/eviction`` (policy/v1 Eviction): the budgets whose selector selects the pod are
    checked as the eviction REST handler does (the pod must be healthy-budgeted:
    ``disruptionsAllowed`` > 0, else 429 ``TooManyRequests`` with a ``DisruptionBudget``
    cause; more than one budget is 500; Pending, terminal or terminating pods skip the
    check; an unready pod under ``IfHealthyBudget`` is evicted when the budget is met),
    then the pod is deleted gracefully with the Eviction's deleteOptions: 201 Status.
13. ``pods/binding`` (POST, v1 Binding), the scheduler's way to set ``spec.nodeName`` once
    (409 when the pod is already bound), with condition PodScheduled True.

Test helpers: ``add_namespace``, ``add_node``, ``add_pdb`` (thread-safe: they run in the
server's loop and are not recorded as requests).

Not modelled: authentication and authorization, watches with resourceVersion and
bookmarks, ``limit``/``continue`` pagination (``limit`` is ignored: everything comes in
one page), server-side apply, finalizers, garbage collection by owner references,
admission beyond the pod defaults above, controllers (no node-lifecycle, taint or
disruption controller: the kubelet double plays them where tests need it; a budget's
status is computed live, counting bare pods as expected, where the disruption controller
would need their controllers' scale for percentages and ``maxUnavailable``), the
``status`` of budgets as a subresource, resource quotas, and the strategic merge
directives other than ``$patch: delete``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
import itertools
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import yaml
from kubernetes import client

from support import kube_rules as rules
from support.kube_rules import error, selector, validate

# (API group, resource) -> (apiVersion, kind) of what this module serves itself.
SERVED = {
    ("", "configmaps"): ("v1", "ConfigMap"),
    ("coordination.k8s.io", "leases"): ("coordination.k8s.io/v1", "Lease"),
    ("", "pods"): ("v1", "Pod"),
    ("", "nodes"): ("v1", "Node"),
    ("policy", "poddisruptionbudgets"): ("policy/v1", "PodDisruptionBudget"),
}
CLUSTER_SCOPED = {("", "nodes")}
# The kinds the store adapter uses: they keep kmock's merge for PATCH, as before.
KMOCK_MERGE = {("", "configmaps"), ("coordination.k8s.io", "leases")}
# The kinds whose status is written only through a status subresource (or computed).
WITH_STATUS = {("", "pods"), ("", "nodes"), ("policy", "poddisruptionbudgets")}
SUBRESOURCES = {
    ("", "pods", "status"),
    ("", "nodes", "status"),
    ("", "pods", "eviction"),
    ("", "pods", "binding"),
}
START_TIMEOUT_S = 10.0
DEFAULT_POD_GRACE_S = 30
# DefaultTolerationSeconds admission: how long a pod stays on a not-ready/unreachable node.
DEFAULT_TOLERATION_S = 300
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"

# The fields that the server owns: a body may not change them, they are not content.
_SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_T = TypeVar("_T")


@dataclass(frozen=True)
class ApiRequest:
    """One request as an RBAC authorizer sees it (``resource``: ``pods/eviction`` for a
    subresource, as in a Role's rules; ``subresource`` alone: ``eviction``)."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str | None  # None: not a resource request (discovery, /version)
    resource: str | None
    namespace: str | None
    name: str | None
    path: str
    subresource: str | None = None
    # Who asked, as far as a double without authentication can tell: the User-Agent (the
    # kubelet double's requests carry ``kubelet_double.KUBELET_USER_AGENT``).
    user_agent: str | None = None


@dataclass(frozen=True)
class Fault:
    """What the double does to the next matching requests instead of answering normally."""

    status: int = 503  # the answer's HTTP status (200: answer normally, after ``delay_s``)
    applied: bool = False  # a write is carried out before the answer (else it is not)
    delay_s: float = 0.0  # hold the answer this long first (past a client timeout: a hang)
    verbs: frozenset[str] | None = None  # only requests with these verbs (None: all)
    times: int | None = None  # how many requests it hits (None: until healed)


def _verb(method: str, named: bool, params: Mapping[str, str]) -> str:
    method = method.upper()
    if method in ("GET", "HEAD"):
        if params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _now(offset_s: float = 0.0) -> str:
    moment = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=offset_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _resource(group: str, plural: str) -> kmock.resource:
    version = SERVED[(group, plural)][0].rpartition("/")[2]
    return kmock.resource(group=group, version=version, plural=plural)


def _success(code: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": code}


def _field_selector(text: str) -> list[Callable[[dict[str, Any]], bool]]:
    """``a.b=v``, ``a.b==v``, ``a.b!=v`` terms on an object's fields (a missing field is "")."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        path, op, value = part.partition("!=") if "!=" in part else part.partition("=")
        if not op or not path:
            raise error(400, "BadRequest", f"invalid field selector: {part!r}")
        tests.append(
            functools.partial(_field_is, path.split("."), value.lstrip("="), negate=op == "!=")
        )
    return tests


def _field_is(keys: list[str], value: str, obj: dict[str, Any], *, negate: bool) -> bool:
    found: Any = obj
    for key in keys:
        found = found.get(key) if isinstance(found, dict) else None
    text = "" if found is None else str(found)
    if isinstance(found, bool):
        text = text.lower()
    return (text == value) != negate


def _header(request: kmock.Request, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name:
            return str(value).split(";")[0].strip()
    return ""


@attrs.define(kw_only=True)
class ApiEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the additions listed in the module docstring."""

    namespaces: set[str] = attrs.field(factory=set)
    _revisions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _revision: int = attrs.field(default=0, init=False)
    _faults: list[list[Any]] = attrs.field(factory=list, init=False)
    _fault_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _seen: list[ApiRequest] = attrs.field(factory=list, init=False)

    # -- test hooks (called from the test's thread) ---------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._fault_lock:
            self._faults.append([fault, fault.times])

    def heal(self) -> None:
        with self._fault_lock:
            self._faults.clear()

    def requests(self) -> list[ApiRequest]:
        with self._fault_lock:
            return list(self._seen)

    # -- serving ------------------------------------------------------------------------------

    def _take_fault(self, verb: str) -> Fault | None:
        with self._fault_lock:
            for entry in self._faults:
                fault: Fault = entry[0]
                left: int | None = entry[1]
                if (fault.verbs is None or verb in fault.verbs) and left != 0:
                    entry[1] = None if left is None else left - 1
                    return fault
        return None

    def _record(self, request: kmock.Request, verb: str) -> None:
        res, sub = request.resource, request.subresource
        plural = None if res is None else res.plural
        with self._fault_lock:
            self._seen.append(
                ApiRequest(
                    verb=verb,
                    group=None if res is None else res.group,
                    resource=f"{plural}/{sub}" if plural and sub else plural,
                    namespace=request.namespace,
                    name=request.name,
                    path=request.url.path,
                    subresource=sub,
                    user_agent=next(
                        (str(v) for k, v in request.headers.items() if k.lower() == "user-agent"),
                        None,
                    ),
                )
            )

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        verb = _verb(str(request.method.value), request.name is not None, request.params)
        self._record(request, verb)
        if res is None or (res.group, res.plural) not in SERVED:
            return await super()._handle(request)
        if request.subresource and (res.group, res.plural, request.subresource) not in (
            SUBRESOURCES
        ):
            if (res.group, res.plural) in KMOCK_MERGE:
                return await super()._handle(request)
            raise error(404, "NotFound", "the server could not find the requested resource")
        fault = self._take_fault(verb)
        if fault is not None and not fault.applied:
            await asyncio.sleep(fault.delay_s)
            if fault.status >= 300:
                raise error(fault.status, "InjectedFault", f"injected HTTP {fault.status}")
        status, answer = self._serve(request, verb, str(res.group), str(res.plural))
        if fault is not None and fault.applied:
            await asyncio.sleep(fault.delay_s)
            if fault.status >= 300:
                raise error(fault.status, "InjectedFault", f"injected after the {verb}")
        return aiohttp.web.json_response(answer, status=status)

    def _serve(
        self, request: kmock.Request, verb: str, group: str, plural: str
    ) -> tuple[int, dict[str, Any]]:
        """Carry out one request at once (no awaits: atomic in the server's loop)."""
        body = request.data if isinstance(request.data, dict) else {}
        namespace, name, sub = request.namespace, request.name, request.subresource
        if verb == "list" and not sub:
            return 200, self._list(request, group, plural)
        if verb == "create" and not sub:
            return 201, self._create(request.namespace, group, plural, body)
        stored = self._stored(group, plural, namespace, name)
        if sub in ("eviction", "binding"):
            if verb != "create":
                raise error(405, "MethodNotAllowed", f"{verb} of pods/{sub} is not served")
            return self._evict(body, stored) if sub == "eviction" else self._bind(body, stored)
        if verb == "get":
            return 200, self._view(group, plural, stored.raw)
        if verb == "delete" and not sub:
            return 200, self._delete(request, group, plural, body, stored)
        if verb in ("update", "patch"):
            return 200, self._update(request, verb, group, plural, stored)
        raise error(405, "MethodNotAllowed", f"{verb} is not served by this double")

    def _stored(self, group: str, plural: str, namespace: str | None, name: str | None) -> Any:
        key: Any = (_resource(group, plural), namespace, name)
        stored = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get)
        if stored is None or stored.deleted:
            what = f"{plural}.{group}" if group else plural
            raise error(404, "NotFound", f'{what} "{name}" not found')
        return stored

    def _all(self, group: str, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """The stored objects of one kind (in one namespace, unless None), not copied."""
        return [
            obj.raw
            for (res, ns, _), obj in self.objects.items()
            if (res.group, res.plural) == (group, plural) and not obj.deleted
            if namespace is None or ns == namespace
        ]

    def _view(self, group: str, plural: str, raw: dict[str, Any]) -> dict[str, Any]:
        """An object as a reader gets it: a copy, with a budget's status computed now."""
        obj = copy.deepcopy(raw)
        if (group, plural) == ("policy", "poddisruptionbudgets"):
            pods = self._all("", "pods", obj["metadata"].get("namespace"))
            obj["status"] = rules.pdb_status(obj, pods)
        return obj

    def _list(self, request: kmock.Request, group: str, plural: str) -> dict[str, Any]:
        tests = selector(request.params.get("labelSelector", ""))
        fields = []
        if (group, plural) not in KMOCK_MERGE:
            fields = _field_selector(request.params.get("fieldSelector", ""))
        items = []
        for raw in self._all(group, plural, request.namespace):
            labels = raw.get("metadata", {}).get("labels") or {}
            if all(test(labels) for test in tests) and all(test(raw) for test in fields):
                item = self._view(group, plural, raw)
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        api_version, kind = SERVED[(group, plural)]
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": sorted(
                items,
                key=lambda item: (
                    item["metadata"].get("namespace") or "",
                    item["metadata"]["name"],
                ),
            ),
        }

    def _create(
        self, namespace: str | None, group: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        if (group, plural) in CLUSTER_SCOPED:
            namespace = None
        elif namespace not in self.namespaces:
            raise error(404, "NotFound", f'namespaces "{namespace}" not found')
        meta: dict[str, Any] = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
        if meta.get("resourceVersion"):
            raise error(
                400, "BadRequest", "resourceVersion should not be set on objects to be created"
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name")
        validate(plural, body, namespace)
        key: Any = (_resource(group, plural), namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            raise error(409, "AlreadyExists", f'{plural} "{name}" already exists')
        obj = copy.deepcopy(body)
        api_version, kind = SERVED[(group, plural)]
        obj.update(apiVersion=api_version, kind=kind)
        self._admit(group, plural, obj)
        if (group, plural) not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        obj["metadata"].update(
            uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=str(self._next())
        )
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        return self._view(group, plural, obj)

    def _admit(self, group: str, plural: str, obj: dict[str, Any]) -> None:
        """Defaults, admission and the kind's own validation, before a create is stored."""
        if (group, plural) == ("", "pods"):
            spec = obj.setdefault("spec", {})
            rules.validate_pod(obj)
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", DEFAULT_POD_GRACE_S)
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            tolerations = spec.setdefault("tolerations", [])
            for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                if not any(t.get("key") in (taint, None, "") for t in tolerations):
                    tolerations.append(
                        {
                            "key": taint,
                            "operator": "Exists",
                            "effect": "NoExecute",
                            "tolerationSeconds": DEFAULT_TOLERATION_S,
                        }
                    )
            obj["status"] = {"phase": "Pending"}
        elif (group, plural) == ("", "nodes"):
            obj.setdefault("spec", {})
            rules.validate_node(obj)
        elif (group, plural) == ("policy", "poddisruptionbudgets"):
            rules.validate_pdb(obj)
            obj["metadata"]["generation"] = 1
            obj.pop("status", None)

    def _delete(
        self,
        request: kmock.Request,
        group: str,
        plural: str,
        body: dict[str, Any],
        stored: Any,
    ) -> dict[str, Any]:
        self._check_preconditions(plural, request.name, body, stored)
        if (group, plural) == ("", "pods"):
            return self._delete_pod(stored, body.get("gracePeriodSeconds"), request.params)
        return self._remove(stored)

    def _check_preconditions(
        self, plural: str, name: str | None, options: dict[str, Any], stored: Any
    ) -> None:
        wanted = options.get("preconditions") or {}
        meta = stored.raw["metadata"]
        for field in ("resourceVersion", "uid"):
            if wanted.get(field) and wanted[field] != meta[field]:
                raise self._conflict(plural, name, f"the {field} in the precondition differs")

    def _remove(self, stored: Any) -> dict[str, Any]:
        last: dict[str, Any] = copy.deepcopy(stored.raw)
        stored.delete()
        self._revision = next(self._revisions)
        return last

    def _delete_pod(
        self, stored: Any, body_grace_s: Any, params: Mapping[str, str]
    ) -> dict[str, Any]:
        """Graceful deletion: mark the pod terminating; grace 0 (or no node) removes it."""
        pod = stored.raw
        grace_s = body_grace_s
        if grace_s is None and params.get("gracePeriodSeconds") not in (None, ""):
            grace_s = params["gracePeriodSeconds"]
        if grace_s is None:
            grace_s = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE_S)
        try:
            grace_s = max(int(grace_s), 0)
        except (TypeError, ValueError):
            raise error(400, "BadRequest", f"invalid gracePeriodSeconds {grace_s!r}") from None
        unscheduled = not pod["spec"].get("nodeName")
        terminal = (pod.get("status") or {}).get("phase") in rules.TERMINATED_PHASES
        if grace_s == 0 or unscheduled or terminal:
            return self._remove(stored)
        current_s = pod["metadata"].get("deletionGracePeriodSeconds")
        if current_s is not None and grace_s >= current_s:
            return copy.deepcopy(pod)  # already terminating at least as soon: no write
        new = copy.deepcopy(pod)
        new["metadata"].update(
            deletionTimestamp=_now(grace_s),
            deletionGracePeriodSeconds=grace_s,
            resourceVersion=str(self._next()),
        )
        stored.history.append(new)
        return copy.deepcopy(new)

    def _evict(self, body: dict[str, Any], stored: Any) -> tuple[int, dict[str, Any]]:
        pod = stored.raw
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise error(400, "BadRequest", "name in URL does not match name in Eviction object")
        pdbs = self._all("policy", "poddisruptionbudgets", namespace)
        refusal = rules.eviction_refusal(pod, pdbs, self._all("", "pods", namespace))
        if refusal is not None:
            raise refusal
        options = body.get("deleteOptions") or {}
        self._check_preconditions("pods", name, options, stored)
        self._delete_pod(stored, options.get("gracePeriodSeconds"), {})
        return 201, _success(201)

    def _bind(self, body: dict[str, Any], stored: Any) -> tuple[int, dict[str, Any]]:
        pod = stored.raw
        name, node = pod["metadata"]["name"], (body.get("target") or {}).get("name")
        if not node:
            raise rules.invalid("Binding", name, "target.name", "Required value")
        if pod["spec"].get("nodeName"):
            raise error(
                409,
                "Conflict",
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        if pod["metadata"].get("deletionTimestamp"):
            raise error(
                409, "Conflict", f"pod {name} is being deleted, cannot be assigned to a host"
            )
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}
        new["status"] = rules.merge_patch(
            new.get("status"), {"conditions": [scheduled]}, rules.MERGE_KEYS, ("status",)
        )
        new["metadata"]["resourceVersion"] = str(self._next())
        stored.history.append(new)
        return 201, _success(201)

    def _update(
        self, request: kmock.Request, verb: str, group: str, plural: str, stored: Any
    ) -> dict[str, Any]:
        old = copy.deepcopy(stored.raw)
        body = request.data if isinstance(request.data, dict) else {}
        meta = body.get("metadata") or {}
        wanted = meta.get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise self._conflict(plural, request.name, "the object has been modified")
        if verb == "patch" and (group, plural) in KMOCK_MERGE:
            stored.patch(body)
            new = copy.deepcopy(stored.raw)
            stored.history.pop()  # decided below whether it is a write at all
        elif verb == "patch":
            new = self._patched(request, old)
            wanted = (new.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise self._conflict(plural, request.name, "the object has been modified")
        else:
            if meta.get("name") not in (None, request.name):
                raise error(400, "BadRequest", "the name of the object does not match the URL")
            new = copy.deepcopy(body)
            new.setdefault("apiVersion", old["apiVersion"])
            new.setdefault("kind", old["kind"])
        if not isinstance(new.get("metadata"), dict):
            raise error(422, "Invalid", "metadata is required")
        new = self._keep_what_is_not_written(group, plural, request.subresource, old, new)
        validate(plural, new, request.namespace)
        self._validate_update(group, plural, old, new)
        for field in (*_SERVER_FIELDS, "namespace", "name"):
            new["metadata"].pop(field, None)
            if field in old["metadata"]:
                new["metadata"][field] = old["metadata"][field]
        if new == old:
            return self._view(group, plural, old)  # no change, no write: the version stays
        new["metadata"]["resourceVersion"] = str(self._next())
        stored.history.append(new)
        return self._view(group, plural, new)

    def _patched(self, request: kmock.Request, old: dict[str, Any]) -> dict[str, Any]:
        content_type = _header(request, "content-type")
        if content_type == "application/json-patch+json":
            return rules.json_patch(old, request.data)
        if not isinstance(request.data, dict):
            raise error(400, "BadRequest", "a merge patch must be a JSON object")
        if content_type == "application/merge-patch+json":
            patched: dict[str, Any] = rules.merge_patch(old, request.data)
            return patched
        if content_type == "application/strategic-merge-patch+json":
            patched = rules.merge_patch(old, request.data, rules.MERGE_KEYS)
            return patched
        raise error(
            415, "UnsupportedMediaType", f"the patch content type {content_type!r} is not served"
        )

    @staticmethod
    def _keep_what_is_not_written(
        group: str, plural: str, sub: str | None, old: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        """A status write changes only ``status``; a write of the object leaves ``status``."""
        if sub == "status":
            kept = copy.deepcopy(old)
            kept["status"] = new.get("status") or {}
            return kept
        if (group, plural) in WITH_STATUS:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        return new

    @staticmethod
    def _validate_update(group: str, plural: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        name = old["metadata"]["name"]
        if (group, plural) == ("", "pods"):
            rules.validate_pod(new)
            why = rules.pod_update_error(old.get("spec") or {}, new.get("spec") or {})
            if why is not None:
                raise rules.invalid("Pod", name, "spec", f"Forbidden: {why}")
        elif (group, plural) == ("", "nodes"):
            rules.validate_node(new)
        elif (group, plural) == ("policy", "poddisruptionbudgets"):
            rules.validate_pdb(new)

    def _next(self) -> int:
        self._revision = next(self._revisions)
        return self._revision

    def _conflict(self, plural: str, name: str | None, why: str) -> kmock.KubernetesError:
        return error(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {plural} "{name}": {why}; please apply your '
            "changes to the latest version and try again",
        )


class KubeApiDouble:
    """``ApiEmulator`` served on 127.0.0.1 from a background thread's asyncio loop."""

    def __init__(self) -> None:
        self.api = ApiEmulator()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._url = ""
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("the Kubernetes API double is not running")
        return self._url

    def configuration(self) -> client.Configuration:
        """A client configuration that reaches this double (plain HTTP, no credentials)."""
        configuration = client.Configuration()
        configuration.host = self.url
        return configuration

    def add_namespace(self, namespace: str) -> None:
        self.api.namespaces.add(namespace)

    def add_node(
        self,
        name: str,
        zone: str,
        *,
        labels: Mapping[str, str] | None = None,
        taints: list[dict[str, Any]] | None = None,
        control_plane: bool = False,
    ) -> dict[str, Any]:
        """Register a Node as a kubelet does: zone and hostname labels, Ready True."""
        all_labels = {ZONE_LABEL: zone, HOSTNAME_LABEL: name, **(labels or {})}
        all_taints = list(taints or [])
        if control_plane:
            all_labels[CONTROL_PLANE_LABEL] = ""
            all_taints.append({"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"})
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": _now(),
            "lastTransitionTime": _now(),
        }
        node = {
            "metadata": {"name": name, "labels": all_labels},
            "spec": {"taints": all_taints} if all_taints else {},
            "status": {
                "conditions": [ready],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
            },
        }
        return self._in_loop(lambda: self.api._create(None, "", "nodes", node))

    def add_pdb(
        self,
        namespace: str,
        name: str,
        selector_labels: Mapping[str, str],
        *,
        min_available: int | str | None = None,
        max_unavailable: int | str | None = None,
    ) -> dict[str, Any]:
        """Create a PodDisruptionBudget selecting pods by labels (one of the two limits)."""
        spec: dict[str, Any] = {"selector": {"matchLabels": dict(selector_labels)}}
        if min_available is not None:
            spec["minAvailable"] = min_available
        if max_unavailable is not None:
            spec["maxUnavailable"] = max_unavailable
        pdb = {"metadata": {"name": name}, "spec": spec}
        return self._in_loop(
            lambda: self.api._create(namespace, "policy", "poddisruptionbudgets", pdb)
        )

    def _in_loop(self, action: Callable[[], _T]) -> _T:
        """Run ``action`` in the server's loop (between requests) and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the Kubernetes API double is not running")

        async def run() -> _T:
            return action()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(START_TIMEOUT_S)

    def requests(self) -> list[ApiRequest]:
        return self.api.requests()

    def inject(self, fault: Fault) -> None:
        self.api.inject(fault)

    def heal(self) -> None:
        self.api.heal()

    def start(self) -> KubeApiDouble:
        ready = threading.Event()

        async def serve() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            async with self.api, kmock.Server(self.api, port=0) as server:
                self._url = f"http://127.0.0.1:{server.port}"
                ready.set()
                await self._stop.wait()

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as exc:  # reported by start() or stop()
                self._failure = exc
                ready.set()

        self._thread = threading.Thread(target=run, name="kube-api-double", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S) or self._failure is not None:
            raise RuntimeError(f"the Kubernetes API double did not start: {self._failure!r}")
        return self

    def stop(self) -> None:
        """Stop serving: the port is closed, so clients meet a refused connection."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(START_TIMEOUT_S)
        self._thread = self._loop = self._stop = None

    def __enter__(self) -> KubeApiDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_kubeconfig(path: Path, servers: dict[str, str], current: str) -> Path:
    """A kubeconfig with one context (and cluster) per name -> API server URL, ``current``
    the current context; the double checks no credentials, so the token is a placeholder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": n, "cluster": {"server": s}} for n, s in servers.items()],
                "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                "contexts": [
                    {"name": n, "context": {"cluster": n, "user": "tester"}} for n in servers
                ],
                "current-context": current,
            }
        )
    )
    return path


def add_site_nodes(
    double: KubeApiDouble, namespace: str, sites: Iterable[str], *, witness: str = "w"
) -> None:
    """BFM's namespace, ``kube-node-lease``, and one node per site: ``node-<site>`` in zone
    ``<SITE>`` (the witness's a control-plane node with its NoSchedule taint)."""
    for name in (namespace, "kube-node-lease"):
        double.add_namespace(name)
    for site in sites:
        double.add_node(f"node-{site}", site.upper(), control_plane=site == witness)
