"""/metrics over real HTTP: Prometheus text and OpenMetrics (by Accept), exemplars with
trace ids only in OpenMetrics, bfm_process_* per site and component, names that pass
``promtool check metrics``, and the server stopping on shutdown."""

from __future__ import annotations

import io
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from prometheus_client import REGISTRY, Histogram
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import bfm_observe

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_telemetry")]
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def histogram() -> Iterator[Histogram]:
    hist = Histogram("bfm_test_handling_seconds", "Test-only histogram.", ["site"])
    yield hist
    REGISTRY.unregister(hist)


def scrape(port: int, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_text_and_openmetrics_with_exemplars_only_in_openmetrics(histogram: Histogram) -> None:
    tel = bfm_observe.configure(
        "router", "a", metrics_port=0, sample_ratio=1.0, log_stream=io.StringIO()
    )
    assert tel.metrics_port
    with trace.get_tracer("bfm").start_as_current_span("work") as span:
        histogram.labels("a").observe(0.042, exemplar=bfm_observe.exemplar())
    trace_id = f"{span.get_span_context().trace_id:032x}"

    kind, text = scrape(tel.metrics_port)
    assert kind.startswith("text/plain; version=0.0.4")
    assert 'bfm_process_cpu_seconds_total{component="router",site="a"}' in text
    assert 'bfm_test_handling_seconds_bucket{le="0.05",site="a"} 1.0' in text
    assert trace_id not in text

    kind, om = scrape(tel.metrics_port, OPENMETRICS)
    assert kind.startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(om)}
    exemplars = [
        s.exemplar for s in families["bfm_test_handling_seconds"].samples if s.exemplar is not None
    ]
    assert len(exemplars) == 1
    assert exemplars[0].labels["trace_id"] == trace_id
    assert exemplars[0].value == 0.042


def test_process_metrics_carry_site_and_component() -> None:
    tel = bfm_observe.configure("module", "b", metrics_port=0, log_stream=io.StringIO())
    assert tel.metrics_port
    _, om = scrape(tel.metrics_port, OPENMETRICS)
    families = {f.name: f for f in text_string_to_metric_families(om)}
    expected = {
        "bfm_process_cpu_seconds": "counter",
        "bfm_process_resident_memory_bytes": "gauge",
        "bfm_process_open_fds": "gauge",
        "bfm_process_max_fds": "gauge",
        "bfm_process_start_time_seconds": "gauge",
        "bfm_log_lines_dropped": "counter",
        "bfm_log_lines_shipped": "counter",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
    for name in expected:
        labels = [s.labels for s in families[name].samples if not s.name.endswith("_created")]
        assert {"site": "b", "component": "module"} in labels, name
    rss = families["bfm_process_resident_memory_bytes"].samples[0].value
    assert rss > 1_000_000
    assert families["bfm_process_open_fds"].samples[0].value >= 3


def test_scrape_passes_promtool_check_metrics(histogram: Histogram) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package prometheus)")
    tel = bfm_observe.configure(
        "router", "a", metrics_port=0, sample_ratio=1.0, log_stream=io.StringIO()
    )
    assert tel.metrics_port
    with trace.get_tracer("bfm").start_as_current_span("work"):
        histogram.labels("a").observe(0.1, exemplar=bfm_observe.exemplar())
    _, text = scrape(tel.metrics_port)
    check = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_shutdown_stops_the_server() -> None:
    tel = bfm_observe.configure("router", "a", metrics_port=0, log_stream=io.StringIO())
    assert tel.metrics_port
    scrape(tel.metrics_port)
    bfm_observe.shutdown()
    with pytest.raises(urllib.error.URLError):
        scrape(tel.metrics_port)
