"""A Kubernetes API double for tests: kmock's ``KubernetesEmulator`` over real HTTP, extended.

It is a double, not an API server. ``KubeApiDouble`` serves ``ApiEmulator`` (a subclass of
``kmock.KubernetesEmulator``) with ``kmock.Server(emulator, port=0)`` on 127.0.0.1, inside
an asyncio loop on a background thread, and the official ``kubernetes`` client talks to
it over real HTTP (``KubeApiDouble.configuration()``). kmock supplies the HTTP server,
request parsing and recording, the Status error bodies, API discovery and its in-memory
object history (``emulator.objects``). Nodes, Pods and everything else keep kmock's own
behaviour.

What kmock's emulator lacks and this module adds, for ConfigMaps and Leases (the objects
the store adapter uses), each because the adapter relies on it:

1. ``metadata.resourceVersion``: every write stamps the object with the next value of one
   counter for the whole server (as kube-apiserver does with etcd's revision); a list
   carries the current value. kmock sets none.
2. Optimistic concurrency: a PUT or PATCH whose ``metadata.resourceVersion`` differs from
   the stored one, and a DELETE whose ``preconditions.resourceVersion`` (or ``uid``)
   differs, are answered 409 ``Conflict`` and change nothing. kmock accepts stale patches
   and ignores delete preconditions.
3. PUT (replace): kmock has none (404). An update that changes nothing keeps the
   resourceVersion and is no write, as in kube-apiserver (why the adapter stamps a write
   id). A PUT of a missing object is 404 (ConfigMaps and Leases are not created on update).
4. Label selectors on lists (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!key``);
   kmock ignores ``labelSelector``. List items come without ``apiVersion``/``kind``, sorted
   by name, as kube-apiserver sends them.
5. Validation kube-apiserver does and kmock does not: namespaces must exist for a create
   (404 ``namespaces "x" not found``; tests add them with ``add_namespace``), names are
   DNS-1123 subdomains, label and annotation keys and values are well-formed, annotations
   stay within 256 KiB and a ConfigMap's data within 1 MiB (422 ``Invalid``), a create
   carrying a resourceVersion or a body whose name or namespace differs from the URL's is
   400; a malformed label selector is 400 (these rules are in ``kube_rules.py``). A
   duplicate create is 409 with reason ``AlreadyExists`` (kmock's reason is its own).
6. ``uid``, ``namespace`` and ``creationTimestamp`` set on create.
7. Faults for the error-mapping tests (``inject``): an HTTP status answered before or after
   the write is carried out, and a delay (a hung server).
8. A record of every request as an RBAC authorizer sees it (verb, group, resource,
   namespace: ``requests()``), for the test that the adapters use only the verbs and
   resources in ``failover.adapters.kubernetes_rbac``.

Not modelled: authentication and authorization, watches with resourceVersion and
bookmarks, ``limit``/``continue`` pagination (``limit`` is ignored: everything comes in
one page), field selectors, admission, finalizers and graceful deletion of these kinds.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
from kubernetes import client

from support.kube_rules import error, selector, validate

# (API group, resource) -> (apiVersion, kind) of what this module serves itself.
SERVED = {
    ("", "configmaps"): ("v1", "ConfigMap"),
    ("coordination.k8s.io", "leases"): ("coordination.k8s.io/v1", "Lease"),
}
START_TIMEOUT_S = 10.0

# The fields that the server owns: a body may not change them, they are not content.
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation")


@dataclass(frozen=True)
class ApiRequest:
    """One request as an RBAC authorizer sees it."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str | None  # None: not a resource request (discovery, /version)
    resource: str | None
    namespace: str | None
    name: str | None
    path: str


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


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
                fault, left = entry
                if (fault.verbs is None or verb in fault.verbs) and left != 0:
                    entry[1] = None if left is None else left - 1
                    return fault
        return None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        verb = _verb(str(request.method.value), request.name is not None, request.params)
        with self._fault_lock:
            self._seen.append(
                ApiRequest(
                    verb=verb,
                    group=None if res is None else res.group,
                    resource=None if res is None else res.plural,
                    namespace=request.namespace,
                    name=request.name,
                    path=request.url.path,
                )
            )
        if res is None or (res.group, res.plural) not in SERVED or request.subresource:
            return await super()._handle(request)
        fault = self._take_fault(verb)
        if fault is not None and not fault.applied:
            await asyncio.sleep(fault.delay_s)
            if fault.status >= 300:
                raise error(fault.status, "InjectedFault", f"injected HTTP {fault.status}")
        status, answer = self._serve(request, verb, res.group, res.plural)
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
        namespace, name = request.namespace, request.name
        if verb == "list":
            return 200, self._list(request, group, plural)
        if verb == "create":
            return 201, self._create(request, group, plural, body)
        key = (request.resource, namespace, name)
        stored = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get)
        if stored is None or stored.deleted:
            what = f"{plural}.{group}" if group else plural
            raise error(404, "NotFound", f'{what} "{name}" not found')
        if verb == "get":
            return 200, copy.deepcopy(stored.raw)
        if verb == "delete":
            wanted = body.get("preconditions") or {}
            meta = stored.raw["metadata"]
            for field in ("resourceVersion", "uid"):
                if wanted.get(field) and wanted[field] != meta[field]:
                    raise self._conflict(plural, name, f"the {field} in the precondition differs")
            last = copy.deepcopy(stored.raw)
            stored.delete()
            self._revision = next(self._revisions)
            return 200, last
        if verb in ("update", "patch"):
            return 200, self._update(request, verb, plural, body, stored)
        raise error(405, "MethodNotAllowed", f"{verb} is not served by this double")

    def _list(self, request: kmock.Request, group: str, plural: str) -> dict[str, Any]:
        tests = selector(request.params.get("labelSelector", ""))
        items = []
        for (res, namespace, _), obj in self.objects.items():
            if (res.group, res.plural) != (group, plural) or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            labels = obj.raw.get("metadata", {}).get("labels") or {}
            if all(test(labels) for test in tests):
                item = copy.deepcopy(obj.raw)
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        api_version, kind = SERVED[(group, plural)]
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": sorted(items, key=lambda item: item["metadata"]["name"]),
        }

    def _create(
        self, request: kmock.Request, group: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        namespace = request.namespace
        if namespace not in self.namespaces:
            raise error(404, "NotFound", f'namespaces "{namespace}" not found')
        meta = body.get("metadata") or {}
        if meta.get("resourceVersion"):
            raise error(
                400, "BadRequest", "resourceVersion should not be set on objects to be created"
            )
        name = meta.get("name")
        validate(plural, body, namespace)
        key = (request.resource, namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            raise error(409, "AlreadyExists", f'{plural} "{name}" already exists')
        obj = copy.deepcopy(body)
        api_version, kind = SERVED[(group, plural)]
        obj.update(apiVersion=api_version, kind=kind)
        obj["metadata"].update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            resourceVersion=str(self._next()),
        )
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        return copy.deepcopy(obj)

    def _update(
        self, request: kmock.Request, verb: str, plural: str, body: dict[str, Any], stored: Any
    ) -> dict[str, Any]:
        old = copy.deepcopy(stored.raw)
        meta = body.get("metadata") or {}
        wanted = meta.get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise self._conflict(plural, request.name, "the object has been modified")
        if verb == "patch":
            stored.patch(body)
            new = copy.deepcopy(stored.raw)
            stored.history.pop()  # decided below whether it is a write at all
        else:
            if meta.get("name") not in (None, request.name):
                raise error(400, "BadRequest", "the name of the object does not match the URL")
            new = copy.deepcopy(body)
            new.setdefault("apiVersion", old["apiVersion"])
            new.setdefault("kind", old["kind"])
        validate(plural, new, request.namespace)
        for field in (*_SERVER_FIELDS, "namespace", "name"):
            if field in old["metadata"]:
                new["metadata"][field] = old["metadata"][field]
        if new == old:
            return old  # no change, no write: the resourceVersion stays
        new["metadata"]["resourceVersion"] = str(self._next())
        stored.history.append(new)
        return copy.deepcopy(new)

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
