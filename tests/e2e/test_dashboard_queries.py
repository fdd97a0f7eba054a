"""The License dashboard's queries against a real Prometheus: every panel's query and the
$site variable's values come back non-empty, and with the values the test knows.

The test exposes the real license metric objects of ``failover.telemetry`` on a
prometheus_client HTTP server of its own and sets their values itself; in a running
system the leading controller's license keeper (``failover.runtime``) sets them.
Prometheus (Debian 2.42, ``/usr/bin/prometheus``) scrapes it every second; each query is
then run as Grafana would, with ``$site`` = All (``.*``) and the datasource variables
dropped.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, start_http_server

from failover import dashboards_build as builder
from failover import telemetry

pytestmark = pytest.mark.e2e

LICENSE_DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "license.dashboard.py"
SCRAPE_WAIT_S = 30.0
DAY_S = 86400
GRACE_LEFT_S = 30 * 3600.0
# Grace: no live site presents a valid dongle. a's expired two days ago, b has none, and
# w's is valid but w is down, so it does not count (docs/licensing.md).
STATUS = {"a": "expired", "b": "missing", "w": "valid"}
DAYS_TO_EXPIRY = {"a": -2.0, "w": 45.0}  # b's dongle is missing: no expiry
LICENSE_METRICS = (
    telemetry.LICENSE_STATE,
    telemetry.LICENSE_GRACE_REMAINING_SECONDS,
    telemetry.LICENSE_DONGLE_VALID,
    telemetry.LICENSE_DONGLE_STATUS,
    telemetry.LICENSE_DONGLE_EXPIRY,
)
EXPAND = {"site": ".*", "__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def set_sample_values() -> None:
    for state in ("licensed", "grace", "unlicensed"):
        telemetry.LICENSE_STATE.labels("a", "controller", state).set(state == "grace")
    telemetry.LICENSE_GRACE_REMAINING_SECONDS.labels("a", "controller").set(GRACE_LEFT_S)
    for site, status in STATUS.items():
        telemetry.LICENSE_DONGLE_VALID.labels(site, "controller").set(0)
        for each in ("valid", "missing", "expired", "tampered", "foreign", "malformed"):
            telemetry.LICENSE_DONGLE_STATUS.labels(site, "controller", each).set(each == status)
    for site, days in DAYS_TO_EXPIRY.items():
        telemetry.LICENSE_DONGLE_EXPIRY.labels(site, "controller").set(time.time() + days * DAY_S)


@pytest.fixture(scope="module")
def metrics_port() -> Iterator[int]:
    """A /metrics server exposing only the license metrics, with the test's values."""
    registry = CollectorRegistry(auto_describe=True)
    for metric in LICENSE_METRICS:
        metric.clear()
        registry.register(metric)
    set_sample_values()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        for metric in LICENSE_METRICS:
            metric.clear()


@dataclass(frozen=True)
class Prometheus:
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[Prometheus]:
    """A real Prometheus scraping ``metrics_port`` every second, once it has scraped every
    license metric; stopped by its pid afterwards."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus is not installed (DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "prometheus)"
        )
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: bfm\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}", log)
        wait_until_scraped(prom, process)
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_scraped(prom: Prometheus, process: subprocess.Popen[bytes]) -> None:
    """Until every license metric is in Prometheus (the first scrape takes a few
    seconds); polls the real server, bounded by SCRAPE_WAIT_S."""
    names = {metric.describe()[0].name for metric in LICENSE_METRICS}
    deadline = time.monotonic() + SCRAPE_WAIT_S
    seen: set[str] = set()
    while time.monotonic() < deadline and process.poll() is None:
        try:
            found = prom.query('count by (__name__) ({__name__=~"bfm_license_.+"})')
            seen = {series["metric"]["__name__"] for series in found}
        except requests.RequestException:
            pass  # not listening yet
        if seen >= names:
            return
        time.sleep(0.2)
    pytest.fail(
        f"Prometheus (exit code {process.poll()}) did not scrape {sorted(names - seen)} "
        f"within {SCRAPE_WAIT_S:.0f} s; "
        f"its log:\n{prom.log.read_text()[-2000:]}"
    )


def expand(expr: str, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in EXPAND:
            pytest.fail(f"{where} uses ${name}, which this test cannot expand")
        return EXPAND[name]

    return _VARIABLE.sub(value, expr)


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"panel {panel['title']!r} query {target['refId']}",
            expand(target["expr"], panel["title"]),
        )
        for panel in model["panels"]
        for target in panel.get("targets", [])
    ]


def by_site(result: list[dict[str, Any]]) -> dict[str, float]:
    return {series["metric"]["site"]: float(series["value"][1]) for series in result}


def test_every_license_query_answers_with_the_values_set(prometheus: Prometheus) -> None:
    model = builder.build(LICENSE_DASHBOARD).model

    answers: dict[str, list[dict[str, Any]]] = {}
    queries = panel_queries(model)
    assert len(queries) >= 7
    for where, expr in queries:
        result = prometheus.query(expr)
        assert result, f"{where} returned nothing from Prometheus: {expr}"
        answers[where.split(" query ")[0]] = result

    # The values mean what the panels say.
    def only(title: str) -> float:
        (series,) = answers[f"panel {title!r}"]
        return float(series["value"][1])

    assert only("License state") == 1  # grace
    assert only("License state over time") == 1
    assert only("Grace remaining") == GRACE_LEFT_S
    assert only("Sites with a valid dongle") == 0
    days = by_site(answers["panel 'Days to expiry'"])
    assert days == pytest.approx(DAYS_TO_EXPIRY, abs=0.01)
    status = {s["metric"]["site"]: s["metric"]["status"] for s in answers["panel 'Dongle status'"]}
    assert status == STATUS
    assert by_site(answers["panel 'Dongle validity per site'"]) == {"a": 0, "b": 0, "w": 0}


def test_the_site_variable_lists_every_site(prometheus: Prometheus) -> None:
    model = builder.build(LICENSE_DASHBOARD).model
    (site,) = [var for var in model["templating"]["list"] if var["name"] == "site"]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", site["query"])
    assert match, site["query"]
    selector, label = match.groups()
    answer = requests.get(
        f"{prometheus.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10
    ).json()
    assert answer["status"] == "success", answer
    assert sorted(answer["data"]) == ["a", "b", "w"]
