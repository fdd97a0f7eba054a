"""Kubernetes coordination store (``kubernetes://namespace``) on Leases and ConfigMaps.

The official ``kubernetes`` client; the mapping of keys to objects (Leases for the lease
keys, ConfigMaps for the rest; names, labels, annotations) is
:mod:`failover.adapters.kubernetes_objects`, and ``docs/kubernetes.md`` has the tables.

- The revision is ``metadata.resourceVersion``. ``create`` is a POST (409: ``Conflict``),
  ``compare_and_set`` a PUT of the whole object carrying the expected resourceVersion
  (409 or 404: ``Conflict``, never an overwrite), ``delete`` a DELETE with a
  resourceVersion precondition. Each write sets a fresh ``write`` annotation, because
  kube-apiserver keeps the resourceVersion of an update that changes nothing while the
  contract gives every write a new revision.
- ``list`` selects the instance's objects by label (and by the key's first path segment
  when the prefix has one), skips the Leases when no lease key can have the prefix, and
  filters the prefix itself. ``wait_for_change`` polls ``list`` every ``poll_interval_s``
  (the runtime polls by itself and never calls it; a watch is future work).

Errors (``connect_timeout_s`` to connect, ``request_timeout_s`` per socket read):

- ``StoreUnavailable``: nothing was written. No connection (refused, connect timeout,
  TLS failure), any failed read, 401/403 (a grant of :mod:`kubernetes_rbac` is missing),
  429 (API priority and fairness refused it before running it), a missing namespace.
- ``Conflict``: 409 on any write; 404 on a compare-and-set or delete.
- ``OutcomeUnknown``: a write was sent and then timed out, lost its connection or was
  answered 5xx (kube-apiserver answers 500/504 when etcd timed out; the write may still
  land). The client's own retries are off: a PUT it repeated after a timeout could meet
  our own first write and report ``Conflict`` for a write that won.
- ``ValueError``: a document too large for its kind, or a write the API refused as
  invalid (400/413/422).

Leader-election pitfalls left to the callers on purpose: durations come from the caller's
monotonic clock (the store reads no clock and never trusts a Lease's ``renewTime``), a
renewal answered ``Conflict`` means someone else wrote the lease (step down),
``OutcomeUnknown`` is neither a win nor a loss (read again), and nothing here exits.
"""

from __future__ import annotations

import builtins
import copy
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlencode

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from failover.adapters import kubernetes_objects as objects
from failover.adapters.kubernetes_objects import (
    CONFIG_MAP,
    DEFAULT_INSTANCE,
    LEASE,
    kind_of,
    object_name,
)
from failover.adapters.memory_store import decode_document, encode_document
from failover.adapters.polling import poll_for_change
from failover.ports import Conflict, JsonDoc, OutcomeUnknown, StoreUnavailable, Versioned

REQUEST_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 1.0  # TCP and TLS handshake
POLL_INTERVAL_S = 0.2
USER_AGENT = "bfm-store"


def _usable_key(key: object) -> bool:
    return isinstance(key, str) and bool(key) and key.isprintable()


def _revision_ok(revision: str) -> bool:
    # kube-apiserver's resourceVersion is an etcd revision, a decimal; anything else was
    # never returned by this store, so it cannot match (and the API would answer 400).
    return revision.isascii() and revision.isdigit() and not revision.startswith("0")


class _Refused(Exception):
    """The API answered 404 or 409; the caller knows what that means for its operation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Calls:
    """The client's calls for one kind of object (typed loosely: the store sends dicts)."""

    read: Callable[..., Any]
    list: Callable[..., Any]
    create: Callable[..., Any]
    replace: Callable[..., Any]
    delete: Callable[..., Any]


class KubernetesStore:
    """A CoordinationStore on Leases and ConfigMaps in one namespace, through the official client.

    Thread-safe: the client's connection pool is; the store's own state is the closed flag.
    ``configuration`` is copied and its retries turned off (see the module docstring).
    """

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        namespace: str,
        instance: str = DEFAULT_INSTANCE,
        context: str | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        check_reachable: bool = True,
    ) -> None:
        for problem in (
            objects.namespace_problem(namespace),
            objects.instance_problem(instance),
        ):
            if problem:
                raise ValueError(f"bfm: the Kubernetes store cannot be opened: {problem}")
        for name, value in (
            ("request_timeout_s", request_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("poll_interval_s", poll_interval_s),
        ):
            if not value > 0:
                raise ValueError(f"bfm: {name} must be positive, got {value}")
        own = copy.deepcopy(configuration)  # the caller's stays as it was
        own.retries = False
        self._host = str(own.host)
        self._namespace = namespace
        self._instance = instance
        self._context = context
        self._timeouts_s = (connect_timeout_s, request_timeout_s)
        self._poll_interval_s = poll_interval_s
        self._closed = threading.Event()
        self._api = client.ApiClient(own)
        self._api.user_agent = USER_AGENT  # kube-apiserver's audit log names who asked
        core, coordination = client.CoreV1Api(self._api), client.CoordinationV1Api(self._api)
        leases = _Calls(
            coordination.read_namespaced_lease,
            coordination.list_namespaced_lease,
            coordination.create_namespaced_lease,
            coordination.replace_namespaced_lease,
            coordination.delete_namespaced_lease,
        )
        config_maps = _Calls(
            core.read_namespaced_config_map,
            core.list_namespaced_config_map,
            core.create_namespaced_config_map,
            core.replace_namespaced_config_map,
            core.delete_namespaced_config_map,
        )
        self._calls = {objects.LEASE: leases, objects.CONFIG_MAP: config_maps}
        if check_reachable:
            selector = objects.label_selector(instance, "")
            try:
                self._send(leases.list, namespace, label_selector=selector, limit=1)
            except _Refused as exc:  # no Leases API at all: not a usable cluster
                raise self._unavailable(f"HTTP {exc.status}: {exc}") from None

    @property
    def url(self) -> str:
        options = {"context": self._context} if self._context else {}
        if self._instance != DEFAULT_INSTANCE:
            options["instance"] = self._instance
        return f"kubernetes://{self._namespace}" + (f"?{urlencode(options)}" if options else "")

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def instance(self) -> str:
        return self._instance

    # -- transport and errors ---------------------------------------------------------------

    def _send(
        self, call: Callable[..., Any], *args: Any, write: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """One request; its answer as JSON. See the module docstring for the errors."""
        if self._closed.is_set():
            raise StoreUnavailable(
                f"bfm: the Kubernetes store {self.url} was closed; open it again"
            )
        try:
            response = call(
                *args, _preload_content=False, _request_timeout=self._timeouts_s, **kwargs
            )
            try:
                raw = response.data
            finally:
                response.release_conn()
        except ApiException as exc:
            self._answer_error(exc, write=write)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._transport_error(exc, write=write)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise self._unavailable(f"an answer that is not a JSON object: {raw[:80]!r}")
        return answer

    def _unavailable(self, reason: str, fix: str = "is the API server up?") -> StoreUnavailable:
        return StoreUnavailable(
            f"bfm: the Kubernetes store {self.url} at {self._host} could not be used "
            f"({reason}); {fix}"
        )

    def _answer_error(self, exc: ApiException, *, write: bool) -> NoReturn:
        status = int(exc.status or 0)
        message = _status_message(exc)
        if status in (404, 409):
            raise _Refused(status, message) from None
        if write and status in (400, 413, 422):
            raise ValueError(f"bfm: the Kubernetes API refused the write: {message}") from None
        if status in (401, 403):
            raise self._unavailable(
                f"HTTP {status}: {message}",
                "grant the service account the verbs listed in "
                "failover/adapters/kubernetes_rbac.py (docs/kubernetes.md)",
            ) from None
        if write and status >= 500:
            raise OutcomeUnknown(
                f"bfm: the Kubernetes API at {self._host} answered a write to {self.url} with "
                f"HTTP {status} ({message}); it may or may not have been applied, read the "
                "key again"
            ) from None
        raise self._unavailable(f"HTTP {status}: {message}") from None

    def _transport_error(self, exc: Exception, *, write: bool) -> NoReturn:
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            exc = exc.reason
        reason = _transport_reason(exc, self._timeouts_s)
        # Not connected: nothing went out. Anything later: a write may have been received.
        if write and not isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            raise OutcomeUnknown(
                f"bfm: a write to the Kubernetes store {self.url} at {self._host} was sent "
                f"but got no answer ({reason}); it may or may not have been applied, read the "
                "key again"
            ) from None
        raise self._unavailable(reason) from None

    # -- objects ----------------------------------------------------------------------------

    def _body(self, key: str, value: JsonDoc, text: str, resource_version: str = "") -> Any:
        return objects.object_body(
            namespace=self._namespace,
            instance=self._instance,
            key=key,
            value=value,
            text=text,
            resource_version=resource_version,
        )

    def _versioned(self, obj: Mapping[str, Any], kind: str) -> Versioned | None:
        """The key, document and revision ``obj`` holds; None when it is not this store's."""
        stored = objects.read_object(obj, kind, instance=self._instance)
        if stored is None:
            return None
        try:
            if stored.text is None:
                raise ValueError("it has no document")
            value = decode_document(stored.text)
            if not isinstance(value, dict):
                raise ValueError("the document is not a JSON object")
        except ValueError as exc:
            raise self._unavailable(
                f"the {kind} {stored.name} for key {stored.key!r} holds no readable document: "
                f"{exc}",
                f"restore it or delete it (kubectl delete {kind.lower()} {stored.name} "
                f"-n {self._namespace})",
            ) from None
        return Versioned(key=stored.key, value=value, revision=_revision_of(stored.revision))

    # -- the port ---------------------------------------------------------------------------

    def get(self, key: str) -> Versioned | None:
        if not _usable_key(key):
            return None  # create() refuses such a key, so it is never there
        kind = kind_of(key)
        name = object_name(self._instance, key)
        try:
            obj = self._send(self._calls[kind].read, name, self._namespace)
        except _Refused as exc:
            if exc.status == 404:
                return None
            raise self._unavailable(f"HTTP {exc.status}: {exc}") from None
        found = self._versioned(obj, kind)
        return found if found is not None and found.key == key else None

    def list(self, prefix: str) -> builtins.list[Versioned]:
        kinds = [LEASE, CONFIG_MAP] if objects.may_hold_lease_keys(prefix) else [CONFIG_MAP]
        selector = objects.label_selector(self._instance, prefix)
        found: builtins.list[Versioned] = []
        for kind in kinds:
            try:
                answer = self._send(
                    self._calls[kind].list, self._namespace, label_selector=selector
                )
            except _Refused as exc:
                raise self._unavailable(f"HTTP {exc.status}: {exc}") from None
            for item in answer.get("items") or []:
                versioned = self._versioned(item, kind)
                if versioned is not None and versioned.key.startswith(prefix):
                    found.append(versioned)
        return sorted(found, key=lambda v: v.key)

    def create(self, key: str, value: JsonDoc) -> str:
        text = encode_document(key, value)
        body = self._body(key, value, text)
        try:
            obj = self._send(self._calls[kind_of(key)].create, self._namespace, body, write=True)
        except _Refused as exc:
            if exc.status == 409:
                raise Conflict(f"bfm: key {key!r} already exists") from None
            raise self._unavailable(  # a POST to a collection: only the namespace can be missing
                f"HTTP 404: {exc}",
                f"does the namespace exist? (kubectl create namespace {self._namespace})",
            ) from None
        return _revision_of((obj.get("metadata") or {}).get("resourceVersion"))

    def compare_and_set(self, key: str, value: JsonDoc, *, expected_revision: str) -> str:
        text = encode_document(key, value)
        if not _revision_ok(expected_revision):
            raise Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")
        body = self._body(key, value, text, resource_version=expected_revision)
        name = object_name(self._instance, key)
        replace = self._calls[kind_of(key)].replace
        try:
            obj = self._send(replace, name, self._namespace, body, write=True)
        except _Refused as exc:
            raise _conflict(key, expected_revision, exc.status) from None
        return _revision_of((obj.get("metadata") or {}).get("resourceVersion"))

    def delete(self, key: str, *, expected_revision: str) -> None:
        if not _usable_key(key) or not _revision_ok(expected_revision):
            raise Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")
        name = object_name(self._instance, key)
        options = {"preconditions": {"resourceVersion": expected_revision}}
        delete = self._calls[kind_of(key)].delete
        try:
            self._send(delete, name, self._namespace, body=options, write=True)
        except _Refused as exc:
            raise _conflict(key, expected_revision, exc.status) from None

    def wait_for_change(
        self, prefix: str, known: Mapping[str, str], *, timeout_s: float
    ) -> builtins.list[Versioned]:  # plain ``list`` here would name the method above
        return poll_for_change(
            self.list,
            prefix,
            known,
            timeout_s=timeout_s,
            poll_interval_s=self._poll_interval_s,
            closed=self._closed,
        )

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._api.close()  # type: ignore[no-untyped-call]


def _revision_of(revision: object) -> str:
    if not isinstance(revision, str) or not revision:
        raise StoreUnavailable(
            "bfm: the Kubernetes API answered with an object that has no resourceVersion; "
            "is this a real API server?"
        )
    return revision


def _conflict(key: str, expected_revision: str, status: int) -> Conflict:
    if status == 404:
        return Conflict(f"bfm: key {key!r} does not exist")
    return Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")


def _status_message(exc: ApiException) -> str:
    """The ``message`` of the API's Status answer, else its HTTP reason."""
    try:
        status = json.loads(exc.body or "")
    except ValueError:
        status = None
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])[:300]
    return str(exc.reason or "no message")


def _transport_reason(exc: Exception, timeouts_s: tuple[float, float]) -> str:
    connect_s, read_s = timeouts_s
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return f"cannot connect: {exc}"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return f"no connection within {connect_s} s"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return f"no answer within {read_s} s"
    return f"connection lost: {exc or type(exc).__name__}"
