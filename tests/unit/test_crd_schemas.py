"""The published-CRD check (tests/support/crd_schemas/) refuses what the API server would.

The vendored schemas are prometheus-operator's own and say where they come from; read as
JSON Schema they refuse wrong types, values and missing fields, and a field the CRD does
not declare, which the API server would prune without a word, is refused too.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import pytest
from support import crd_schemas

SERVICE_MONITOR: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "bfm-site", "namespace": "bfm", "labels": {"app": "bfm"}},
    "spec": {
        "namespaceSelector": {"matchNames": ["bfm"]},
        "selector": {"matchLabels": {"app.kubernetes.io/component": "site"}},
        "endpoints": [
            {
                "port": "metrics",
                "path": "/metrics",
                "scheme": "http",
                "interval": "15s",
                "honorLabels": True,
                "params": {"collect[]": ["a", "b"]},
                "metricRelabelings": [{"sourceLabels": ["__name__"], "action": "keep"}],
                "tlsConfig": {"ca": {"secret": {"name": "ca", "key": "ca.crt"}}},
            }
        ],
    },
}
PROMETHEUS_RULE: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "bfm-site"},
    "spec": {
        "groups": [
            {
                "name": "bfm-site",
                "partial_response_strategy": "Abort",
                "rules": [
                    {"record": "bfm:up:sum", "expr": "sum(up)"},
                    {
                        "alert": "BfmSiteDown",
                        "expr": "bfm_site_up == 0",
                        "for": "2m",
                        "labels": {"severity": "critical"},
                        "annotations": {"summary": "a site is down"},
                    },
                ],
            }
        ]
    },
}
PRUNED = "not in the published {} schema; the API server would drop it"


def changed(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with ``value`` set at a dotted path (``spec.endpoints.0.port``)."""
    out = copy.deepcopy(obj)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


@pytest.mark.parametrize("kind", sorted(crd_schemas.KINDS))
def test_each_schema_names_its_published_source(kind: str) -> None:
    source = crd_schemas.source(kind)
    assert source["kind"] == kind and source["version"] == "v1"
    assert source["repository"] == "prometheus-operator/prometheus-operator"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", source["operatorVersion"])
    schema = crd_schemas.openapi_schema(kind)
    assert schema["required"] == ["spec"] and "spec" in schema["properties"]
    jsonschema.Draft202012Validator.check_schema(crd_schemas.to_json_schema(schema))


@pytest.mark.parametrize("obj", [SERVICE_MONITOR, PROMETHEUS_RULE], ids=lambda o: o["kind"])
def test_a_valid_object_has_no_problems(obj: dict[str, Any]) -> None:
    assert crd_schemas.problems(obj) == []


@pytest.mark.parametrize(
    ("obj", "path", "value", "problem"),
    [
        # A misspelling is pruned by the API server, so the default interval would be used.
        (SERVICE_MONITOR, "spec.endpoints.0.intervall", "15s", "$.spec.endpoints[0].intervall"),
        (SERVICE_MONITOR, "spec.endpointz", [], "$.spec.endpointz"),
        (SERVICE_MONITOR, "spec.endpoints.0.tlsConfig.ca.secret.keyy", "x", "$.spec.end"),
        (SERVICE_MONITOR, "spec.endpoints.0.metricRelabelings.0.regexp", ".*", "$.spec.end"),
        (SERVICE_MONITOR, "spec.selector.matchLabel", {}, "$.spec.selector.matchLabel"),
        (SERVICE_MONITOR, "status2", {}, "$.status2"),
        (PROMETHEUS_RULE, "spec.groups.0.rules.1.annotation", {}, "$.spec.groups[0].rules[1]"),
        (PROMETHEUS_RULE, "spec.groups.0.queryOffset", "1m", "$.spec.groups[0].queryOffset"),
    ],
)
def test_a_field_the_crd_does_not_declare_is_a_problem(
    obj: dict[str, Any], path: str, value: Any, problem: str
) -> None:
    problems = crd_schemas.problems(changed(obj, path, value))
    assert len(problems) == 1
    assert problems[0].startswith(problem) and problems[0].endswith(PRUNED.format(obj["kind"]))


@pytest.mark.parametrize(
    ("obj", "path", "value", "says"),
    [
        (SERVICE_MONITOR, "spec.endpoints.0.honorLabels", "true", "is not of type 'boolean'"),
        (SERVICE_MONITOR, "spec.endpoints.0.interval", "15 seconds", "does not match"),
        (SERVICE_MONITOR, "spec.endpoints.0.interval", 15, "is not of type 'string'"),
        (SERVICE_MONITOR, "spec.endpoints.0.scheme", "HTTP", "is not one of"),
        (SERVICE_MONITOR, "spec.endpoints.0.targetPort", 8080.5, "is not valid under any"),
        (SERVICE_MONITOR, "spec.endpoints.0.params", {"x": "y"}, "is not of type 'array'"),
        (SERVICE_MONITOR, "spec.endpoints", {"port": "metrics"}, "is not of type 'array'"),
        (SERVICE_MONITOR, "spec.sampleLimit", "100", "is not of type 'integer'"),
        (PROMETHEUS_RULE, "spec.groups.0.partial_response_strategy", "maybe", "does not match"),
        (PROMETHEUS_RULE, "spec.groups.0.rules.1.for", "2 min", "does not match"),
        (PROMETHEUS_RULE, "spec.groups.0.rules.1.labels", {"severity": 2}, "is not of type"),
        (PROMETHEUS_RULE, "spec.groups.0.name", "", "should be non-empty"),
        (PROMETHEUS_RULE, "apiVersion", "monitoring.coreos.com/v1beta1", "apiVersion"),
    ],
)
def test_a_wrong_type_or_value_is_a_problem(
    obj: dict[str, Any], path: str, value: Any, says: str
) -> None:
    problems = crd_schemas.problems(changed(obj, path, value))
    assert len(problems) == 1 and says in problems[0], problems


def test_a_missing_required_field_is_a_problem() -> None:
    monitor = copy.deepcopy(SERVICE_MONITOR)
    del monitor["spec"]["endpoints"]
    assert crd_schemas.problems(monitor) == ["$.spec: 'endpoints' is a required property"]


@pytest.mark.parametrize(("expr", "valid"), [("up", True), (1, True), (1.5, False)])
def test_int_or_string_is_an_integer_or_a_string(expr: Any, valid: bool) -> None:
    schema = crd_schemas.to_json_schema({"x-kubernetes-int-or-string": True})
    assert jsonschema.Draft202012Validator(schema).is_valid(expr) is valid


def test_late_inline_flags_of_go_regexps_work_in_python() -> None:
    schema = crd_schemas.to_json_schema({"type": "string", "pattern": "^(?i)(abort|warn)?$"})
    validator = jsonschema.Draft202012Validator(schema)
    assert [validator.is_valid(v) for v in ("ABORT", "warn", "", "abort!")] == [
        True,
        True,
        True,
        False,
    ]


def test_kubernetes_extensions_and_nullable_are_translated() -> None:
    schema = crd_schemas.to_json_schema(
        {
            "type": "object",
            "x-kubernetes-map-type": "atomic",
            "properties": {"n": {"type": "integer", "nullable": True}},
        }
    )
    assert schema == {"type": "object", "properties": {"n": {"type": ["integer", "null"]}}}


def test_preserve_unknown_fields_keeps_what_it_does_not_declare() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kept": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "strict": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }
    value = {"kept": {"anything": 1}, "strict": {"a": "x", "b": "y"}}
    assert crd_schemas.pruned_fields(value, schema) == ["strict.b"]
