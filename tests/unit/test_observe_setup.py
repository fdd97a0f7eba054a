"""bfm_observe.configure / shutdown / current: import side effects, idempotence, thread
safety, reconfiguration, resource attributes and environment variables."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry import trace

import bfm_observe
from bfm_observe import tracing
from bfm_observe.logs import BfmStreamHandler

pytestmark = pytest.mark.usefixtures("clean_telemetry")


@contextmanager
def socket_bound(port: int) -> Iterator[None]:
    """Hold a TCP port on 127.0.0.1 so a server cannot bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        yield


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, BfmStreamHandler)]


def test_importing_configures_nothing() -> None:
    code = (
        "import logging, threading, json\n"
        "from prometheus_client import REGISTRY\n"
        "import bfm_observe\n"
        "from opentelemetry import trace\n"
        "print(json.dumps({'provider': type(trace.get_tracer_provider()).__name__,\n"
        "  'handlers': len(logging.getLogger().handlers), 'threads': threading.active_count(),\n"
        "  'bfm_metrics': [n for n in REGISTRY._names_to_collectors if n.startswith('bfm_')],\n"
        "  'current': bfm_observe.current() is None}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "provider": "ProxyTracerProvider",
        "handlers": 0,
        "threads": 1,
        "bfm_metrics": [],
        "current": True,
    }


def test_configure_twice_returns_the_same_telemetry_and_warns_on_other_args() -> None:
    stream = io.StringIO()
    tel = bfm_observe.configure("router", "a", log_stream=stream)
    assert bfm_observe.configure("router", "a", log_stream=stream) is tel
    assert "called again" not in stream.getvalue()
    assert bfm_observe.configure("module", "b", log_stream=stream) is tel
    assert "called again" in stream.getvalue()
    assert len(ours()) == 1
    assert bfm_observe.current() is tel


def test_concurrent_configure_sets_up_once() -> None:
    stream = io.StringIO()
    results: list[bfm_observe.Telemetry] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        results.append(bfm_observe.configure("router", "a", log_stream=stream))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 8
    assert all(r is results[0] for r in results)
    assert len(ours()) == 1


def test_shutdown_is_safe_and_reconfigure_gives_a_new_setup() -> None:
    bfm_observe.shutdown()
    root = logging.getLogger()
    level_before = root.level
    first = bfm_observe.configure("router", "a", log_stream=io.StringIO(), log_level=logging.DEBUG)
    assert root.level == logging.DEBUG
    bfm_observe.shutdown()
    assert bfm_observe.current() is None
    assert ours() == []
    assert root.level == level_before
    second = bfm_observe.configure("module", "b", log_stream=io.StringIO(), sample_ratio=1.0)
    assert second is not first
    assert second.component == "module"
    assert second.instance_id == f"b-module-{os.getpid()}"
    with trace.get_tracer("bfm").start_as_current_span("s") as span:
        assert span.get_span_context().trace_flags.sampled
        assert span.resource.attributes["service.name"] == "module"  # type: ignore[attr-defined]
    bfm_observe.shutdown()
    bfm_observe.shutdown()


def test_resource_attributes_merge_with_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,service.name=zzz,bfm.site=q"
    )
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    tel = bfm_observe.configure("router", "a", log_stream=io.StringIO(), instance_id="i-1")
    attrs = dict(tel.resource.attributes)
    assert attrs["service.namespace"] == "hemisphere"
    assert attrs["service.name"] == "router"
    assert attrs["service.instance.id"] == "i-1"
    assert attrs["bfm.site"] == "a"
    assert attrs["cloud.availability_zone"] == "a"
    assert attrs["deployment.environment"] == "test"


def test_service_name_from_the_environment_only_without_component(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    tel = bfm_observe.configure("", "a", log_stream=io.StringIO())
    assert tel.resource.attributes["service.name"] == "from-env"
    assert tel.component == "from-env"


def test_sdk_disabled_sets_up_no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tel = bfm_observe.configure("router", "a", log_stream=io.StringIO(), sample_ratio=1.0)
    assert isinstance(tel.tracer, trace.NoOpTracer)
    with tel.tracer.start_as_current_span("s") as span:
        assert not span.get_span_context().is_valid
        assert bfm_observe.exemplar() is None


def test_endpoint_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracing.resolve_endpoint(None) is None
    assert tracing.resolve_endpoint("http://h:4318/") == "http://h:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")
    assert tracing.resolve_endpoint(None) == "http://base:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://full:1/x")
    assert tracing.resolve_endpoint(None) == "http://full:1/x"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.resolve_endpoint(None) is None
    assert tracing.resolve_endpoint("http://h:4318") == "http://h:4318/v1/traces"


def test_targets_file_written_with_the_bound_port(tmp_path: Path) -> None:
    target = tmp_path / "sd" / "router-a.json"
    tel = bfm_observe.configure(
        "router", "a", log_stream=io.StringIO(), metrics_port=0, targets_file=target
    )
    assert tel.metrics_port
    assert json.loads(target.read_text()) == [
        {
            "targets": [f"127.0.0.1:{tel.metrics_port}"],
            "labels": {"site": "a", "component": "router"},
        }
    ]
    assert [p.name for p in target.parent.iterdir()] == ["router-a.json"]  # no temp file left


def test_a_failed_configure_leaves_nothing_behind() -> None:
    first = bfm_observe.configure("router", "a", log_stream=io.StringIO(), metrics_port=0)
    port = first.metrics_port
    assert port is not None
    bfm_observe.shutdown()
    with socket_bound(port), pytest.raises(OSError):
        bfm_observe.configure("router", "a", log_stream=io.StringIO(), metrics_port=port)
    assert bfm_observe.current() is None
    assert ours() == []
