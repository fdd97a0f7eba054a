"""``configure`` / ``shutdown``: the one call that sets up traces, metrics and logs for a
component (ARCHITECTURE.md section 5)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Tracer

from bfm_observe import loki, metrics, tracing
from bfm_observe.logs import BfmStreamHandler, JsonFormatter

_log = logging.getLogger("bfm_observe")


@dataclass(frozen=True, eq=False)
class Telemetry:
    """What ``configure`` set up for this process."""

    component: str
    site: str
    instance_id: str
    metrics_port: int | None
    tracer: Tracer
    resource: Resource
    _shipper: loki.LokiShipper | None = field(default=None, repr=False)

    def dropped_lines(self) -> int:
        """Log lines this configuration gave up shipping to Loki (0 without Loki)."""
        return 0 if self._shipper is None else self._shipper.dropped

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export the ended spans now (True when done within ``timeout_s``)."""
        return tracing.force_flush(timeout_s)


@dataclass
class _State:
    telemetry: Telemetry | None
    args: dict[str, Any]
    handlers: list[logging.Handler]
    root_level: int
    server: metrics.MetricsServer | None


_LOCK = threading.RLock()
_STATE: _State | None = None


def _labels() -> tuple[str, str] | None:
    tel = current()
    return None if tel is None else (tel.site, tel.component)


def configure(
    component: str,
    site: str,
    *,
    otlp_endpoint: str | None = None,
    sample_ratio: float | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    targets_file: Path | None = None,
    loki_url: str | None = None,
    log_level: int = logging.INFO,
    log_stream: IO[str] | None = None,
    instance_id: str | None = None,
    loki_queue_size: int = 10000,
) -> Telemetry:
    """Set up traces (OTLP), metrics (/metrics), JSON logs and Loki shipping for this
    process. A second call returns the first call's Telemetry (warning if its arguments
    differ); call ``shutdown`` first to configure anew."""
    global _STATE  # noqa: PLW0603 - the process's one configuration
    args = {k: v for k, v in locals().items() if k != "args"}
    with _LOCK:
        if _STATE is not None:
            if args != _STATE.args:
                _log.warning(
                    "bfm_observe.configure called again with other arguments: keeping the "
                    "first configuration (call shutdown() first to change it)"
                )
            assert _STATE.telemetry is not None
            return _STATE.telemetry
        component = component or os.environ.get("OTEL_SERVICE_NAME", "").strip()
        instance_id = instance_id or f"{site}-{component}-{os.getpid()}"
        root = logging.getLogger()
        handlers: list[logging.Handler] = []
        server: metrics.MetricsServer | None = None
        formatter = JsonFormatter(site, component)
        try:
            stream = BfmStreamHandler(log_stream or sys.stderr)
            stream.setFormatter(formatter)
            handlers.append(stream)
            resource = tracing.build_resource(component, site, instance_id)
            tracer = tracing.install(
                resource,
                tracing.resolve_sampler(sample_ratio),
                tracing.resolve_endpoint(otlp_endpoint),
            )
            dropped, shipped = metrics.log_counters()
            on_drop = dropped.labels(site, component).inc  # the series exists from now on, at 0
            on_ship = shipped.labels(site, component).inc
            metrics.ensure_process_collector(_labels)
            if metrics_port is not None:
                server = metrics.MetricsServer(metrics_host, metrics_port)
                if targets_file is not None:
                    metrics.write_targets(targets_file, metrics_host, server.port, site, component)
            shipper = None
            loki_url = loki_url or os.environ.get("BFM_LOKI_URL", "").strip() or None
            if loki_url:
                labels = {"site": site, "component": component, "namespace": tracing.NAMESPACE}
                shipper = loki.LokiShipper(
                    loki.BfmLokiEmitter(loki_url, labels),
                    formatter,
                    queue_size=loki_queue_size,
                    on_drop=on_drop,
                    on_ship=on_ship,
                )
                handlers.append(shipper)
        except BaseException:
            _teardown(_State(None, args, handlers, root.level, server), timeout_s=0.5)
            raise
        telemetry = Telemetry(
            component=component,
            site=site,
            instance_id=instance_id,
            metrics_port=None if server is None else server.port,
            tracer=tracer,
            resource=resource,
            _shipper=shipper,
        )
        for old in [h for h in root.handlers if isinstance(h, BfmStreamHandler)]:
            root.removeHandler(old)  # left by a configuration that was never shut down
        state = _State(telemetry, args, handlers, root.level, server)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(log_level)
        _STATE = state
        return telemetry


def _teardown(state: _State, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    spans = tracing.uninstall()  # flushes in the background while Loki flushes here
    root = logging.getLogger()
    for handler in state.handlers:
        root.removeHandler(handler)
        if isinstance(handler, loki.LokiShipper):
            handler.close(timeout_s)
        else:
            handler.flush()
    root.setLevel(state.root_level)
    if state.server is not None:
        state.server.stop()
    spans.join(max(0.0, deadline - time.monotonic()))


def shutdown(*, timeout_s: float = 3.0) -> None:
    """Flush spans and queued log lines (waiting at most about ``timeout_s`` for Loki),
    stop the metrics server and remove the log handlers. Safe when not configured."""
    global _STATE
    with _LOCK:
        state, _STATE = _STATE, None
        if state is not None:
            _teardown(state, timeout_s)


def current() -> Telemetry | None:
    """The current configuration's Telemetry, or None."""
    state = _STATE
    return None if state is None else state.telemetry
