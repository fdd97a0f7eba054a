"""The metric catalogue (failover/telemetry.py and bfm_observe's own metrics) against its
documentation and conventions: every metric in docs/metrics.md, labelled ``site`` and
``component``, no label outside the bounded set, and names that ``promtool check metrics``
accepts (ARCHITECTURE.md section 5)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest

from bfm_observe import metrics as observe_metrics
from bfm_observe.logstore import server_metrics  # noqa: F401 - registers the log store's
from failover import telemetry  # registers the catalogue

DOC = Path(__file__).parents[2] / "docs" / "metrics.md"
NOT_METRICS = {"bfm_observe"}  # the package, named in the doc's prose
BOUNDED_LABELS = {
    "site",
    "component",
    "kind",
    "outcome",
    "phase",
    "op",
    "reason",
    "state",
    "status",
}


def _catalogue() -> dict[str, tuple[str, ...]]:
    observe_metrics.log_counters()  # registered on first configure; here without one
    found: dict[str, tuple[str, ...]] = {}
    for collector in list(REGISTRY._collector_to_names):  # the registered metric objects
        name = getattr(collector, "_name", "")
        labels = getattr(collector, "_labelnames", None)
        if name.startswith("bfm_") and labels is not None and not name.startswith("bfm_test"):
            suffix = "_total" if getattr(collector, "_type", "") == "counter" else ""
            found[name + suffix] = tuple(labels)
    return found


def _documented() -> set[str]:
    return set(re.findall(r"`(bfm_[a-z_]+)`", DOC.read_text())) - NOT_METRICS


def test_every_metric_is_documented_and_labelled_site_and_component() -> None:
    catalogue = _catalogue()
    assert len(catalogue) >= 20, sorted(catalogue)
    documented = _documented()
    missing = sorted(set(catalogue) - documented)
    assert not missing, f"metrics not in docs/metrics.md: {missing}"
    for name, labels in catalogue.items():
        assert labels[:2] == ("site", "component"), (name, labels)
        assert set(labels) <= BOUNDED_LABELS, (name, labels)
        if name.endswith("_total"):
            continue
        assert not name.endswith(("_ms", "_milliseconds", "_count")), name


def test_documented_metrics_all_exist() -> None:
    """The doc names nothing that is not exported (the process metrics come from
    bfm_observe's collector, registered once a process configures telemetry)."""
    documented = _documented()
    process = {n for n in documented if n.startswith("bfm_process_")}
    assert process == {
        "bfm_process_cpu_seconds_total",
        "bfm_process_resident_memory_bytes",
        "bfm_process_open_fds",
        "bfm_process_max_fds",
        "bfm_process_start_time_seconds",
    }, process
    assert documented - process - set(_catalogue()) == set()


def test_the_catalogue_passes_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package prometheus; .ci/system-packages)")
    # one child per metric, so each family has samples to check
    for metric in (telemetry.SITE_UP, telemetry.SHARDS_OWNED, telemetry.COMPONENT_UP):
        metric.labels("a", "test").set(1)
    telemetry.MESSAGES.labels("a", "test", "alarm", "acked").inc()
    telemetry.MESSAGE_SECONDS.labels("a", "test", "alarm").observe(0.01)
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(REGISTRY),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    for metric in (telemetry.SITE_UP, telemetry.SHARDS_OWNED, telemetry.COMPONENT_UP):
        metric.remove("a", "test")
    telemetry.MESSAGES.remove("a", "test", "alarm", "acked")
    telemetry.MESSAGE_SECONDS.remove("a", "test", "alarm")
