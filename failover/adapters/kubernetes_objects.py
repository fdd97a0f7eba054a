"""How the Kubernetes store keeps a key: which kind, which name, labels, annotations, body.

Pure functions, no client and no I/O, so the mapping is tested on its own
(``tests/unit/test_kubernetes_store.py``) and documented in ``docs/kubernetes.md``:

- Lease keys (:func:`is_lease_key`) are ``coordination.k8s.io/v1`` Leases: the
  controllers' ``controller/leader`` and each site's ``sites/<site>/lease``, the keys that
  ``failover.runtime.documents`` gives leases (a test keeps the two in step). The JSON
  document is in the ``DOCUMENT_ANNOTATION``; the spec's ``holderIdentity`` and
  ``leaseDurationSeconds`` mirror it for ``kubectl get leases`` only. Every other key is a
  ConfigMap with the document in ``data["document"]``.
- :func:`object_name` gives any key a DNS-1123 label name: ``bfm-<slug>-<hash>``, a
  readable slug of the key and 64 bits of SHA-256 over the instance and the key. The key
  is kept verbatim in the ``KEY_ANNOTATION``; :func:`read_object` accepts an object only
  when its labels, annotation and name agree, so a copy or a stray object is never read
  as a key.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from failover.ports import JsonDoc

LEASE = "Lease"
CONFIG_MAP = "ConfigMap"
API_VERSIONS = {LEASE: "coordination.k8s.io/v1", CONFIG_MAP: "v1"}
DEFAULT_INSTANCE = "bfm"

LABEL_DOMAIN = "bfm.hemisphere.io"
STORE_LABEL = f"{LABEL_DOMAIN}/store"  # the store instance: several may share a namespace
KEY_HEAD_LABEL = f"{LABEL_DOMAIN}/key-head"  # the key's first path segment, for list()
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "bfm"
KEY_ANNOTATION = f"{LABEL_DOMAIN}/key"
WRITE_ANNOTATION = f"{LABEL_DOMAIN}/write"  # fresh per write: a no-op update keeps its version
DOCUMENT_ANNOTATION = f"{LABEL_DOMAIN}/document"  # Leases: their spec cannot hold JSON
DOCUMENT_DATA_KEY = "document"  # ConfigMaps: data["document"]

MAX_CONFIG_MAP_DATA_BYTES = 1024 * 1024  # kube-apiserver's limit on a ConfigMap's data
MAX_ANNOTATION_BYTES = 256 * 1024  # ... and on an object's annotations, keys included
INSTANCE_MAX_CHARS = 40
_NAME_SLUG_MAX_CHARS = 40
_HASH_HEX_CHARS = 16
_INT32_MAX = 2**31 - 1

_LEASE_KEY = re.compile(r"controller/leader|sites/[^/]+/lease")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_READABLE_HEAD = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")  # never contains "."


def is_lease_key(key: str) -> bool:
    """Whether ``key`` is kept in a Lease (else in a ConfigMap)."""
    return _LEASE_KEY.fullmatch(key) is not None


def kind_of(key: str) -> str:
    """``LEASE`` or ``CONFIG_MAP``: the kind of object that holds ``key``."""
    return LEASE if is_lease_key(key) else CONFIG_MAP


def may_hold_lease_keys(prefix: str) -> bool:
    """Whether some lease key starts with ``prefix`` (else ``list`` skips the Leases)."""
    if "controller/leader".startswith(prefix) or "sites/".startswith(prefix):
        return True
    if not prefix.startswith("sites/"):
        return False
    site, slash, tail = prefix.removeprefix("sites/").partition("/")
    return not slash or (bool(site) and "lease".startswith(tail))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX_CHARS]


def object_name(instance: str, key: str) -> str:
    """The name of the object holding ``key``: a DNS-1123 label (valid for both kinds)."""
    slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:_NAME_SLUG_MAX_CHARS]
    digest = _digest(f"{instance}\0{key}")
    return f"bfm-{slug.rstrip('-')}-{digest}" if slug else f"bfm-{digest}"


def key_head_label(key_or_prefix: str) -> str:
    """The ``KEY_HEAD_LABEL`` value for the first path segment (readable when it can be)."""
    head = key_or_prefix.partition("/")[0]
    return head if _READABLE_HEAD.fullmatch(head) else f"h.{_digest(head)}"


def label_selector(instance: str, prefix: str) -> str:
    """The label selector of every object of ``instance`` whose key may start with ``prefix``."""
    selector = f"{STORE_LABEL}={instance}"
    if "/" in prefix:  # every key under such a prefix has the same first segment
        selector += f",{KEY_HEAD_LABEL}={key_head_label(prefix)}"
    return selector


def namespace_problem(namespace: str) -> str | None:
    """Why ``namespace`` cannot be a Kubernetes namespace, or None when it can."""
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        return "a namespace is 1-63 lowercase letters, digits or '-', starting and ending alnum"
    return None


def instance_problem(instance: str) -> str | None:
    """Why ``instance`` cannot name a store instance (a label value), or None when it can."""
    if len(instance) > INSTANCE_MAX_CHARS or not _DNS_LABEL.fullmatch(instance):
        return (
            f"an instance is 1-{INSTANCE_MAX_CHARS} lowercase letters, digits or '-', "
            "starting and ending alnum"
        )
    return None


def object_body(
    *, namespace: str, instance: str, key: str, value: JsonDoc, text: str, resource_version: str
) -> dict[str, Any]:
    """The whole object to POST or PUT for ``key`` with the encoded document ``text``.

    ``resource_version`` ("" for a create) is the compare-and-set precondition. ValueError
    when the document is larger than the kind can hold."""
    kind = kind_of(key)
    annotations = {KEY_ANNOTATION: key, WRITE_ANNOTATION: uuid.uuid4().hex}
    metadata: dict[str, Any] = {
        "name": object_name(instance, key),
        "namespace": namespace,
        "labels": {
            MANAGED_BY_LABEL: MANAGED_BY,
            STORE_LABEL: instance,
            KEY_HEAD_LABEL: key_head_label(key),
        },
        "annotations": annotations,
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    body: dict[str, Any] = {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": metadata}
    if kind == LEASE:
        annotations[DOCUMENT_ANNOTATION] = text
        size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
        if size > MAX_ANNOTATION_BYTES:
            raise ValueError(
                f"bfm: cannot store key {key!r}: a Lease's annotations hold at most "
                f"{MAX_ANNOTATION_BYTES} bytes and this document needs {size}"
            )
        return {**body, "spec": lease_spec(value)}
    size = len(DOCUMENT_DATA_KEY) + len(text.encode())
    if size > MAX_CONFIG_MAP_DATA_BYTES:
        raise ValueError(
            f"bfm: cannot store key {key!r}: a ConfigMap holds at most "
            f"{MAX_CONFIG_MAP_DATA_BYTES} bytes of data and this document needs {size}"
        )
    return {**body, "data": {DOCUMENT_DATA_KEY: text}}


def lease_spec(value: JsonDoc) -> dict[str, Any]:
    """What a Lease's spec can show of a lease document, for people (``kubectl get leases``)."""
    spec: dict[str, Any] = {}
    holder = value.get("holder")
    if isinstance(holder, str) and holder:
        spec["holderIdentity"] = holder
    duration_s = value.get("lease_duration_s")
    if (
        isinstance(duration_s, int | float)
        and not isinstance(duration_s, bool)
        and math.isfinite(duration_s)
        and duration_s > 0
    ):
        spec["leaseDurationSeconds"] = min(max(1, math.ceil(duration_s)), _INT32_MAX)
    return spec


@dataclass(frozen=True)
class StoredObject:
    """What one of the store's objects holds: the key, the document text, the revision."""

    name: str
    key: str
    text: str | None  # None: the object carries no document (someone edited it)
    revision: str


def read_object(obj: Mapping[str, Any], kind: str, *, instance: str) -> StoredObject | None:
    """The key, document and revision in ``obj`` (a ``kind``), or None when it is not one
    of ``instance``'s objects: labels, key annotation and name must all agree."""
    meta = obj.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    key = annotations.get(KEY_ANNOTATION)
    if labels.get(STORE_LABEL) != instance or not isinstance(key, str):
        return None
    name = meta.get("name")
    if name != object_name(instance, key) or kind_of(key) != kind:
        return None
    if kind == LEASE:
        text = annotations.get(DOCUMENT_ANNOTATION)
    else:
        text = (obj.get("data") or {}).get(DOCUMENT_DATA_KEY)
    revision = meta.get("resourceVersion")
    return StoredObject(
        name=name,
        key=key,
        text=text if isinstance(text, str) else None,
        revision=revision if isinstance(revision, str) else "",
    )
