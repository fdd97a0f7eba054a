"""Metrics on prometheus_client's default REGISTRY: process metrics per component, the
log-shipping counters, the /metrics HTTP server and the Prometheus file_sd target file.

Everything here is created on first ``configure`` (once per process), never at import.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Labels = Callable[[], "tuple[str, str] | None"]
"""Returns (site, component) of the current configuration, or None when unconfigured."""

_LABELS = ("site", "component")
_LOCK = threading.Lock()
_COUNTERS: tuple[Counter, Counter] | None = None
_COLLECTOR: ProcessCollector | None = None


def _read_proc() -> dict[str, float]:
    """Readings from os.times and /proc/self (only those this platform offers)."""
    times = os.times()
    out = {
        "cpu": times.user + times.system,
        "max_fds": float(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
    }
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        out["rss"] = float(pages * os.sysconf("SC_PAGE_SIZE"))
        out["fds"] = float(len(os.listdir("/proc/self/fd")))
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        out["start"] = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return out


class ProcessCollector(Collector):
    """``bfm_process_*`` for this process, labelled with the current site and component."""

    def __init__(self, labels: Labels) -> None:
        self.labels = labels

    def describe(self) -> Iterable[Metric]:
        return self._families(None, {})

    def collect(self) -> Iterable[Metric]:
        current = self.labels()
        return self._families(current, _read_proc() if current else {})

    @staticmethod
    def _families(current: tuple[str, str] | None, proc: dict[str, float]) -> list[Metric]:
        specs: list[tuple[str, str, str, type[CounterMetricFamily | GaugeMetricFamily]]] = [
            ("cpu", "bfm_process_cpu_seconds", "CPU time used (user+system).", CounterMetricFamily),
            ("rss", "bfm_process_resident_memory_bytes", "Resident memory.", GaugeMetricFamily),
            ("fds", "bfm_process_open_fds", "Open file descriptors.", GaugeMetricFamily),
            (
                "max_fds",
                "bfm_process_max_fds",
                "Limit on open file descriptors.",
                GaugeMetricFamily,
            ),
            (
                "start",
                "bfm_process_start_time_seconds",
                "Process start time, seconds since the Unix epoch.",
                GaugeMetricFamily,
            ),
        ]
        families: list[Metric] = []
        for key, name, doc, kind in specs:
            family = kind(name, doc, labels=_LABELS)
            if current is not None and key in proc:
                family.add_metric(list(current), proc[key])
            families.append(family)
        return families


def ensure_process_collector(labels: Labels) -> None:
    """Register the process collector on the default REGISTRY (once per process); later
    calls only point it at another labels source."""
    global _COLLECTOR  # noqa: PLW0603 - one collector per process registry
    with _LOCK:
        if _COLLECTOR is None:
            _COLLECTOR = ProcessCollector(labels)
            REGISTRY.register(_COLLECTOR)
        _COLLECTOR.labels = labels


def log_counters() -> tuple[Counter, Counter]:
    """(bfm_log_lines_dropped_total, bfm_log_lines_shipped_total), created once."""
    global _COUNTERS  # noqa: PLW0603 - metric objects live once per process registry
    with _LOCK:
        if _COUNTERS is None:
            _COUNTERS = (
                Counter(
                    "bfm_log_lines_dropped",
                    "Log lines not shipped to Loki (queue full or push failed).",
                    _LABELS,
                ),
                Counter("bfm_log_lines_shipped", "Log lines pushed to Loki.", _LABELS),
            )
        return _COUNTERS


class MetricsServer:
    """prometheus_client's /metrics server (text or OpenMetrics by Accept), stoppable."""

    def __init__(self, host: str, port: int) -> None:
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr=host)
        self.port: int = self._server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


def write_targets(path: Path, host: str, port: int, site: str, component: str) -> None:
    """Write a Prometheus file_sd document for this server atomically (temp + rename)."""
    if host in {"", "0.0.0.0", "::"}:  # noqa: S104 - recognising a wildcard, not binding one
        host = "127.0.0.1"
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    doc = [{"targets": [target], "labels": {"site": site, "component": component}}]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # Prometheus may run as another user
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
