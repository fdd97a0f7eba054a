"""Checks an object against the Prometheus Operator's published CRD schema, as the API server would.

``prometheusrule.crd.json`` and ``servicemonitor.crd.json`` hold the ``openAPIV3Schema`` of
each CRD's v1 version as prometheus-operator publishes it (SOURCE.md says from where). The
API server applies such a structural schema in two ways and so does :func:`problems`:

- it validates types, patterns, enums and required fields: here the OpenAPI v3 schema is
  read as JSON Schema (:func:`to_json_schema`);
- it prunes every field the schema does not declare, silently: a misspelled
  ``intervall`` would be dropped and the default used. Here such a field is an error
  (:func:`pruned_fields`).

``metadata`` is left to the API server's own ObjectMeta rules, as the CRD leaves it.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

HERE = Path(__file__).parent
API_VERSION = "monitoring.coreos.com/v1"
FILES = {"PrometheusRule": "prometheusrule.crd.json", "ServiceMonitor": "servicemonitor.crd.json"}
KINDS = frozenset(FILES)

# Keywords whose value is one schema, or a list of schemas, or a map of names to schemas.
_ONE = ("items", "additionalProperties", "not")
_MANY = ("anyOf", "allOf", "oneOf")
_NAMED = ("properties",)
# Go's RE2 takes inline flags anywhere; Python only at the start: ^(?i)x -> (?i)^x.
_LATE_FLAGS = re.compile(r"^\^\(\?([a-zA-Z]+)\)")


@functools.cache
def _document(kind: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((HERE / FILES[kind]).read_text())
    return document


def source(kind: str) -> dict[str, str]:
    """Where the kind's schema was taken from: repository, path, commit, operator version."""
    found: dict[str, str] = _document(kind)["source"]
    return found


def openapi_schema(kind: str) -> dict[str, Any]:
    """The kind's published ``openAPIV3Schema`` (v1), as vendored."""
    schema: dict[str, Any] = _document(kind)["openAPIV3Schema"]
    return schema


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 structural schema as JSON Schema: what differs is translated.

    ``x-kubernetes-*`` keys are dropped (list and map types say how to merge, not what is
    valid), except ``x-kubernetes-int-or-string``, which becomes integer-or-string;
    ``nullable`` admits null; RE2's late inline flags move to the front.
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ONE and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in _MANY:
            out[key] = [to_json_schema(item) for item in value]
        elif key in _NAMED:
            out[key] = {name: to_json_schema(item) for name, item in value.items()}
        elif key == "pattern":
            out[key] = _LATE_FLAGS.sub(r"(?\1)^", value)
        elif key == "nullable" or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = to_json_schema(openapi_schema(kind))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def pruned_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of the fields in ``value`` that ``schema`` does not declare: the API server
    would prune them without a word. A value of the wrong type is left to validation."""
    found: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        known = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key in known:
                found += pruned_fields(item, known[key], where)
            elif isinstance(extra, dict):
                found += pruned_fields(item, extra, where)
            elif not keeps_unknown:
                found.append(where)
    elif isinstance(value, list) and schema.get("type") == "array" and "items" in schema:
        for index, item in enumerate(value):
            found += pruned_fields(item, schema["items"], f"{path}[{index}]")
    return found


def problems(obj: dict[str, Any]) -> list[str]:
    """What the API server, given the published CRD, would refuse or silently drop in ``obj``
    (one sentence each; empty when it would keep the object as written)."""
    kind = obj.get("kind")
    if kind not in KINDS:
        return [f"kind {kind!r} is none of {sorted(KINDS)}"]
    found = []
    if obj.get("apiVersion") != API_VERSION:
        found.append(f"apiVersion {obj.get('apiVersion')!r} is not {API_VERSION!r}")
    for error in sorted(_validator(kind).iter_errors(obj), key=lambda e: e.json_path):
        found.append(f"{error.json_path}: {error.message}")
    schema = openapi_schema(kind)
    body = {key: value for key, value in obj.items() if key != "metadata"}
    found += [
        f"$.{where}: not in the published {kind} schema; the API server would drop it"
        for where in pruned_fields(body, schema)
    ]
    return found
