"""The OpenTelemetry Collector configs in collectors/ (collectors/README.md): the agent
(DaemonSet) and the gateway (Deployment) name only components they define and use every
one they define; each component's type is one of the pinned collector-contrib release,
as recorded in collectors/contrib-components.json (the binary is not installed here);
memory_limiter comes first and batch last in every pipeline; the agent parses trace ids
out of BFM's JSON log lines and the gateway sends logs to a Loki OTLP path; environment
variables appear only as ``${env:...}`` and each is documented. The embedded log store
accepts what the gateway sends: an OTLP/HTTP protobuf log record with a trace id is
found again by ``| trace_id="..."``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from bfm_observe.logstore.client import LokiClient
from bfm_observe.logstore.server import LogStoreServer
from bfm_observe.logstore.store import LogStore

REPO = Path(__file__).resolve().parents[2]
COLLECTORS = REPO / "collectors"
AGENT = COLLECTORS / "otel-agent.yaml"
GATEWAY = COLLECTORS / "otel-gateway.yaml"
CONFIGS = (AGENT, GATEWAY)
FACTS = COLLECTORS / "contrib-components.json"
README = COLLECTORS / "README.md"
SCRAPE_CONFIG = COLLECTORS / "prometheus.yml"

KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
PIPELINE_KINDS = ("receivers", "processors", "exporters")
SIGNALS = ("traces", "metrics", "logs")
RELEASE = re.compile(r"v0\.\d{3}\.\d+")
TYPE_NAME = re.compile(r"[a-z][a-z0-9_]*")
# ${env:NAME} or ${env:NAME:-default} (the env provider's default syntax).
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path.name}: not a mapping"
    return doc


def _facts() -> dict[str, Any]:
    doc = json.loads(FACTS.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _type_of(name: str) -> str:
    """``otlp/gateway`` -> ``otlp``: a component id is ``type[/name]``."""
    return name.split("/", 1)[0]


def _pipelines(doc: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    pipelines = doc["service"]["pipelines"]
    assert isinstance(pipelines, dict) and pipelines
    return pipelines


def _strings(node: Any) -> Iterator[str]:
    """Every string in the loaded YAML, keys and values (comments are gone by then)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _resolved(value: str) -> str:
    """``value`` with each ``${env:NAME:-default}`` replaced by its default."""
    return ENV_REF.sub(lambda m: m.group(2) or "", value)


def test_the_release_facts_are_well_formed() -> None:
    facts = _facts()
    assert RELEASE.fullmatch(facts["release"]), facts["release"]
    assert "manifest.yaml" in facts["source"] or "builder-config.yaml" in facts["source"]
    for kind in KINDS:
        names = facts[kind]
        assert names, f"{kind}: empty"
        assert all(isinstance(n, str) and TYPE_NAME.fullmatch(n) for n in names), kind
        assert names == sorted(set(names)), f"{kind}: not sorted and unique"
        modules = facts["modules"][kind]
        assert modules and modules == sorted(set(modules)), f"modules.{kind}"
    # Every type name was read from its component's metadata.yaml, and that component's
    # module is in the release's manifest.
    sources = {(s["kind"], s["type"]): s for s in facts["type_sources"]}
    assert set(sources) == {(kind, t) for kind in KINDS for t in facts[kind]}
    for (kind, _), source in sources.items():
        assert source["module"] in facts["modules"][kind], source
        assert "metadata.yaml at commit " in source["metadata"], source


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_pipelines_name_defined_components_and_use_all(path: Path) -> None:
    doc = _load(path)
    pipelines = _pipelines(doc)
    assert set(pipelines) == set(SIGNALS), f"{path.name}: pipelines {sorted(pipelines)}"
    for kind in PIPELINE_KINDS:
        defined = set(doc.get(kind) or {})
        used = {name for pipeline in pipelines.values() for name in pipeline.get(kind, [])}
        assert used <= defined, f"{path.name}: {kind} used but not defined: {used - defined}"
        assert defined <= used, f"{path.name}: {kind} defined but unused: {defined - used}"
        for signal, pipeline in pipelines.items():
            names = pipeline.get(kind, [])
            assert names, f"{path.name}: pipeline {signal} has no {kind}"
            assert len(names) == len(set(names)), f"{path.name}: {signal} repeats a {kind[:-1]}"
    extensions = set(doc["service"].get("extensions") or [])
    assert extensions == set(doc.get("extensions") or {}), path.name
    assert "health_check" in extensions, path.name
    assert "connectors" not in doc, f"{path.name}: connectors need tests of their own"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_component_type_is_in_the_pinned_release(path: Path) -> None:
    doc, facts = _load(path), _facts()
    for kind in (*PIPELINE_KINDS, "extensions"):
        for name in doc.get(kind) or {}:
            assert _type_of(name) in facts[kind], (
                f"{path.name}: {kind[:-1]} {name!r}: type {_type_of(name)!r} is not a "
                f"{kind[:-1]} of {facts['release']} (collectors/contrib-components.json)"
            )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_memory_limiter_first_and_batch_last(path: Path) -> None:
    for signal, pipeline in _pipelines(_load(path)).items():
        processors = [_type_of(name) for name in pipeline["processors"]]
        assert processors[0] == "memory_limiter", f"{path.name} {signal}: {processors}"
        assert processors[-1] == "batch", f"{path.name} {signal}: {processors}"
        assert processors.count("memory_limiter") == processors.count("batch") == 1


def test_memory_limiters_set_their_check_interval() -> None:
    for path in CONFIGS:
        for name, config in _load(path)["processors"].items():
            if _type_of(name) == "memory_limiter":
                assert config.get("check_interval"), f"{path.name}: {name} (default 0s)"


def test_the_agent_parses_container_logs_and_their_trace_ids() -> None:
    doc = _load(AGENT)
    logs = _pipelines(doc)["logs"]
    (filelog,) = (name for name in logs["receivers"] if _type_of(name) == "filelog")
    config = doc["receivers"][filelog]
    assert "/var/log/pods/*/*/*.log" in config["include"]
    operators = config["operators"]
    types = [op["type"] for op in operators]
    assert types[0] == "container", types  # CRI/docker line format first
    assert config.get("include_file_path") is True  # the container operator needs it
    json_at = types.index("json_parser")
    traced = [
        op
        for op in operators[json_at:]
        if op["type"] == "trace_parser" or (op["type"] == "json_parser" and "trace" in op)
    ]
    assert traced, f"no trace_parser after the json_parser: {types}"
    trace = traced[0] if traced[0]["type"] == "trace_parser" else traced[0]["trace"]
    assert trace["trace_id"]["parse_from"] == "attributes.trace_id"
    assert trace["span_id"]["parse_from"] == "attributes.span_id"
    severity = [op for op in operators if op["type"] == "severity_parser"]
    assert severity and severity[0]["parse_from"] == "attributes.level"
    # Python's level names that the default preset does not know.
    assert severity[0]["mapping"] == {"warn": "warning", "fatal": "critical"}


def test_the_agent_takes_the_site_from_the_nodes_zone_label() -> None:
    processors = _load(AGENT)["processors"]
    (k8s,) = (config for name, config in processors.items() if _type_of(name) == "k8sattributes")
    labels = {label["tag_name"]: label for label in k8s["extract"]["labels"]}
    assert labels["site"] == {
        "tag_name": "site",
        "key": "topology.kubernetes.io/zone",
        "from": "node",
    }
    assert {"k8s.pod.name", "k8s.namespace.name", "k8s.node.name"} <= set(
        k8s["extract"]["metadata"]
    )


def test_the_agent_sends_to_the_gateway_over_otlp() -> None:
    doc = _load(AGENT)
    for signal, pipeline in _pipelines(doc).items():
        assert [_type_of(name) for name in pipeline["exporters"]] == ["otlp"], signal
    (exporter,) = doc["exporters"].values()
    assert exporter["endpoint"] == "${env:BFM_GATEWAY_ENDPOINT:-bfm-otel-gateway:4317}"
    assert _resolved(str(exporter["tls"]["insecure"])) == "false"  # TLS unless told


def test_the_gateway_sends_logs_to_a_loki_otlp_path() -> None:
    doc = _load(GATEWAY)
    pipelines = _pipelines(doc)
    (logs_exporter,) = pipelines["logs"]["exporters"]
    assert _type_of(logs_exporter) == "otlphttp"
    endpoint = doc["exporters"][logs_exporter]["logs_endpoint"]
    assert ENV_REF.fullmatch(endpoint), endpoint
    assert urlparse(_resolved(endpoint)).path.endswith("/otlp/v1/logs"), endpoint
    (traces_exporter,) = pipelines["traces"]["exporters"]
    assert _type_of(traces_exporter) == "otlp"
    (metrics_exporter,) = pipelines["metrics"]["exporters"]
    config = doc["exporters"][metrics_exporter]
    assert config["resource_to_telemetry_conversion"] == {"enabled": True}


def _scraped_ports(job: dict[str, Any]) -> set[int]:
    """The ports a scrape job reaches: its static targets' and its DNS discovery's."""
    ports = {
        int(target.rsplit(":", 1)[1])
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    return ports | {int(dns["port"]) for dns in job.get("dns_sd_configs", []) if "port" in dns}


def test_prometheus_scrapes_the_gateways_prometheus_exporter() -> None:
    """collectors/prometheus.yml has a job on the port the gateway's `prometheus` exporter
    listens on, keeping the exported job/instance/site labels, and that exporter is in the
    gateway's metrics pipeline."""
    gateway = _load(GATEWAY)
    exporters = {n: c for n, c in gateway["exporters"].items() if _type_of(n) == "prometheus"}
    assert exporters, "the gateway has no prometheus exporter"
    scrape = _load(SCRAPE_CONFIG)
    for name, config in exporters.items():
        assert name in _pipelines(gateway)["metrics"]["exporters"]
        port = int(urlparse(f"//{_resolved(config['endpoint'])}").port or 0)
        jobs = [j for j in scrape["scrape_configs"] if port in _scraped_ports(j)]
        assert jobs, f"no job in {SCRAPE_CONFIG.name} scrapes the gateway's {name} on :{port}"
        assert all(job.get("honor_labels") is True for job in jobs)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_environment_is_read_only_through_env_references(path: Path) -> None:
    readme = README.read_text(encoding="utf-8")
    names: set[str] = set()
    for value in _strings(_load(path)):
        names |= {m.group(1) for m in ENV_REF.finditer(value)}
        rest = ENV_REF.sub("", value)
        assert "$" not in rest, f"{path.name}: {value!r} reads the environment otherwise"
        assert "from_env" not in rest and "env_var" not in rest, f"{path.name}: {value!r}"
    for key in _keys(_load(path)):
        assert "env_var" not in key, f"{path.name}: {key} reads the environment otherwise"
    assert names, path.name
    undocumented = {name for name in names if f"`{name}`" not in readme}
    assert not undocumented, f"{path.name}: not in collectors/README.md: {sorted(undocumented)}"


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keys(item)


def test_the_readme_names_the_pinned_release_and_the_mounted_files() -> None:
    readme = README.read_text(encoding="utf-8")
    assert _facts()["release"] in readme
    for path in CONFIGS:
        assert f"helm/bfm/files/collectors/{path.name}" in readme


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LogStoreServer]:
    store = LogStore(tmp_path / "logs.db")
    server = LogStoreServer(store, port=0)
    server.start()
    yield server
    server.stop()
    store.close()


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def test_the_embedded_log_store_takes_what_the_gateway_sends(served: LogStoreServer) -> None:
    """An OTLP/HTTP protobuf export as the gateway's otlphttp exporter makes it from a log
    line the agent parsed: resource from the container operator and k8sattributes, trace
    context and severity from BFM's JSON line, the line itself as the body."""
    line = json.dumps(
        {
            "ts": "2024-05-01T12:00:00.123Z",
            "level": "warning",
            "logger": "failover.agent",
            "msg": "applied under epoch 7",
            "site": "a",
            "component": "eap",
            "trace_id": TRACE,
            "span_id": SPAN,
        }
    )
    now_ns = time.time_ns()
    resource = Resource(
        attributes=[
            _kv("k8s.namespace.name", "bfm"),
            _kv("k8s.pod.name", "bfm-site-a-0"),
            _kv("k8s.container.name", "bfm-site"),
            _kv("site", "a"),
            _kv("component", "bfm-site"),
        ]
    )
    record = LogRecord(
        time_unix_nano=now_ns,
        observed_time_unix_nano=now_ns,
        severity_number=SeverityNumber.SEVERITY_NUMBER_WARN,
        severity_text="warning",
        body=AnyValue(string_value=line),
        attributes=[_kv("logger", "failover.agent"), _kv("log.iostream", "stderr")],
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(SPAN),
    )
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=[record])])
        ]
    )
    endpoint = _resolved(_load(GATEWAY)["exporters"]["otlphttp/loki"]["logs_endpoint"])
    answer = requests.post(
        served.url + urlparse(endpoint).path,
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert answer.status_code in (200, 204), answer.text
    client = LokiClient(served.url)
    found = client.query_range(
        f'{{k8s_namespace_name="bfm"}} | trace_id="{TRACE}"',
        start_ns=now_ns - 60 * 10**9,
        end_ns=now_ns + 60 * 10**9,
    )
    (got,) = found.lines
    assert got.line == line
    assert got.value_of("trace_id") == TRACE and got.value_of("span_id") == SPAN
    # Structured metadata, not index labels (Loki's default OTLP mapping).
    index_labels = set(client.labels(now_ns - 60 * 10**9, now_ns + 60 * 10**9))
    assert {"k8s_namespace_name", "k8s_pod_name", "k8s_container_name"} <= index_labels
    assert not {"trace_id", "span_id"} & index_labels, index_labels
    other = client.query_range(
        f'{{k8s_namespace_name="bfm"}} | trace_id="{"0" * 31}1"',
        start_ns=now_ns - 60 * 10**9,
        end_ns=now_ns + 60 * 10**9,
    )
    assert other.lines == ()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_collector_serves_its_own_metrics_for_prometheus(path: Path) -> None:
    """otelcol_* (accepted, refused, dropped, queues) on :8888 for every pod: the default
    would keep them on the pod's loopback, where no Prometheus reaches."""
    telemetry = _load(path)["service"]["telemetry"]["metrics"]
    (reader,) = telemetry["readers"]
    exporter = reader["pull"]["exporter"]["prometheus"]
    assert exporter == {"host": "0.0.0.0", "port": 8888}
    assert telemetry["level"] in ("basic", "normal", "detailed")


def test_prometheus_scrapes_the_gateways_own_metrics() -> None:
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    port = _load(GATEWAY)["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"][
        "prometheus"
    ]["port"]
    sd = jobs["otel-collector"]["dns_sd_configs"][0]
    assert sd["port"] == port
    assert sd["names"] == jobs["otel-gateway"]["dns_sd_configs"][0]["names"]
