"""A real Prometheus (Debian's ``/usr/bin/prometheus``) scraping metric objects a test sets
itself: the e2e tests of the dashboards' queries and of ``bfm dashboards preview``.

``serve_metrics(metrics)`` exposes exactly ``metrics`` (prometheus_client objects,
cleared before and after) on 127.0.0.1; ``prometheus_scraping(port, folder, names)``
runs Prometheus scraping that port every second until each metric of ``names`` has been
scraped for ``history_s`` (range queries then have points), and stops it by its pid.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, start_http_server

from failover import telemetry

SCRAPE_WAIT_S = 30.0
STOP_TIMEOUT_S = 10.0
DAY_S = 86400
# The License dashboard's test values. Grace: no live site presents a valid dongle. a's
# expired two days ago, b has none, w's is valid but w is down (docs/licensing.md).
LICENSE_STATUS = {"a": "expired", "b": "missing", "w": "valid"}
DAYS_TO_EXPIRY = {"a": -2.0, "w": 45.0}  # b's dongle is missing: no expiry
GRACE_LEFT_S = 30 * 3600.0
LICENSE_METRICS = (
    telemetry.LICENSE_STATE,
    telemetry.LICENSE_GRACE_REMAINING_SECONDS,
    telemetry.LICENSE_DONGLE_VALID,
    telemetry.LICENSE_DONGLE_STATUS,
    telemetry.LICENSE_DONGLE_EXPIRY,
)


def set_license_values() -> None:
    """The license metrics as the leading controller sets them in grace (values above)."""
    for state in ("licensed", "grace", "unlicensed"):
        telemetry.LICENSE_STATE.labels("a", "controller", state).set(state == "grace")
    telemetry.LICENSE_GRACE_REMAINING_SECONDS.labels("a", "controller").set(GRACE_LEFT_S)
    for site, status in LICENSE_STATUS.items():
        telemetry.LICENSE_DONGLE_VALID.labels(site, "controller").set(0)
        for each in ("valid", "missing", "expired", "tampered", "foreign", "malformed"):
            telemetry.LICENSE_DONGLE_STATUS.labels(site, "controller", each).set(each == status)
    for site, days in DAYS_TO_EXPIRY.items():
        telemetry.LICENSE_DONGLE_EXPIRY.labels(site, "controller").set(time.time() + days * DAY_S)


def require_prometheus() -> str:
    """The prometheus binary, or skip naming the package to install."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus is not installed (DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "prometheus)"
        )
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric_names(metrics: Sequence[Any]) -> set[str]:
    return {metric.describe()[0].name for metric in metrics}


@contextmanager
def serve_metrics(metrics: Sequence[Any]) -> Iterator[int]:
    """A /metrics server on 127.0.0.1 exposing only ``metrics``; yields its port. The
    caller sets the values (after this clears them)."""
    registry = CollectorRegistry(auto_describe=True)
    for metric in metrics:
        metric.clear()
        registry.register(metric)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        for metric in metrics:
            metric.clear()


@contextmanager
def prometheus_scraping(
    port: int, folder: Path, names: set[str], *, history_s: float = 0.0
) -> Iterator[str]:
    """Prometheus scraping ``127.0.0.1:port`` every second, once every metric of ``names``
    has been scraped for ``history_s``; yields its URL."""
    binary = require_prometheus()
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: bfm\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )
    listen = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{listen}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{listen}"
    try:
        _wait_for_scrapes(url, process, log, names, history_s)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _wait_for_scrapes(
    url: str, process: subprocess.Popen[bytes], log: Path, names: set[str], history_s: float
) -> None:
    """Poll the real server (bounded by SCRAPE_WAIT_S) until every name was scraped and
    then ``history_s`` more; fail with Prometheus's log otherwise."""
    deadline = time.monotonic() + SCRAPE_WAIT_S
    seen: set[str] = set()
    first_seen_s = 0.0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            answer = requests.get(
                f"{url}/api/v1/query",
                params={"query": 'count by (__name__) ({__name__=~"bfm_.+"})'},
                timeout=5,
            ).json()
            seen = {series["metric"]["__name__"] for series in answer["data"]["result"]}
        except requests.RequestException:
            pass  # not listening yet
        if seen >= names:
            first_seen_s = first_seen_s or time.monotonic()
            if time.monotonic() - first_seen_s >= history_s:
                return
        time.sleep(0.2)
    pytest.fail(
        f"Prometheus (exit code {process.poll()}) did not scrape {sorted(names - seen)} within "
        f"{SCRAPE_WAIT_S:.0f} s; its log:\n{log.read_text()[-2000:]}"
    )
