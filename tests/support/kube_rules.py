"""What kube-apiserver checks and kmock's emulator does not: errors, names, labels, selectors.

Part of the Kubernetes API double (``kube_double.py``, whose docstring lists what the
double adds to kmock); kept apart so each module stays small.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import kmock

MAX_ANNOTATION_BYTES = 256 * 1024
MAX_CONFIG_MAP_DATA_BYTES = 1024 * 1024

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def label_value_ok(value: object) -> bool:
    return isinstance(value, str) and (
        value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)
    )


def selector(text: str) -> list[Callable[[Mapping[str, str]], bool]]:
    """kube-apiserver's label selector grammar, as functions of an object's labels."""
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for part in (p.strip() for p in re.split(r",(?![^()]*\))", text) if text.strip()):
        if m := re.fullmatch(r"!\s*(\S+)", part):
            key = m[1]
            tests.append(lambda labels, key=key: key not in labels)
        elif m := re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^()]*)\)", part):
            key, negate = m[1], m[2] == "notin"
            values = {v.strip() for v in m[3].split(",")}
            if not all(label_value_ok(v) for v in values):
                raise error(400, "BadRequest", f"invalid label value in selector: {part!r}")
            tests.append(
                lambda labels, key=key, values=values, negate=negate: (
                    (labels.get(key) in values) != negate
                )
            )
        elif m := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", part):
            key, negate, value = m[1], m[2] == "!=", m[3]
            if not label_value_ok(value):
                raise error(400, "BadRequest", f"invalid label value in selector: {part!r}")
            tests.append(
                lambda labels, key=key, value=value, negate=negate: (
                    (labels.get(key) == value) != negate
                )
            )
        elif re.fullmatch(r"[^=!\s()]+", part):
            key = part
            tests.append(lambda labels, key=key: key in labels)
        else:
            raise error(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if not label_key_ok(key):
            raise error(400, "BadRequest", f"invalid label key in selector: {part!r}")
    return tests


def validate(plural: str, obj: dict[str, Any], namespace: str | None) -> None:
    """Raise the 4xx kube-apiserver answers for an object it would not store."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise error(422, "Invalid", "metadata is required")
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise error(422, "Invalid", f"metadata.name: Invalid value: {name!r}")
    if meta.get("namespace") not in (None, namespace):
        raise error(400, "BadRequest", "the namespace of the object does not match the URL")
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        if not label_key_ok(key) or not label_value_ok(value):
            raise error(422, "Invalid", f"metadata.labels: Invalid value: {key}={value!r}")
    annotations = meta.get("annotations") or {}
    if not all(label_key_ok(k) and isinstance(v, str) for k, v in annotations.items()):
        raise error(422, "Invalid", "metadata.annotations: Invalid key or value")
    if sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items()) > (
        MAX_ANNOTATION_BYTES
    ):
        raise error(
            422, "Invalid", "metadata.annotations: Too long: must have at most 262144 bytes"
        )
    if plural == "configmaps":
        data = obj.get("data") or {}
        if not all(_DATA_KEY.fullmatch(k) and isinstance(v, str) for k, v in data.items()):
            raise error(422, "Invalid", "data: Invalid key or value")
        if sum(len(k) + len(v.encode()) for k, v in data.items()) > MAX_CONFIG_MAP_DATA_BYTES:
            raise error(422, "Invalid", "data: Too long: must have at most 1048576 bytes")
    elif (obj.get("spec") or {}).get("leaseDurationSeconds", 1) <= 0:
        raise error(422, "Invalid", "spec.leaseDurationSeconds: must be greater than 0")
