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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from support.prometheus_run import (
    DAYS_TO_EXPIRY,
    GRACE_LEFT_S,
    LICENSE_METRICS,
    LICENSE_STATUS,
    metric_names,
    prometheus_scraping,
    require_prometheus,
    serve_metrics,
    set_license_values,
)

from failover import dashboards_build as builder

pytestmark = pytest.mark.e2e

LICENSE_DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "license.dashboard.py"
EXPAND = {"site": ".*", "__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus scraping only the license metrics, with the test's values,
    every second, once it has scraped each; stopped by its pid afterwards."""
    require_prometheus()
    with serve_metrics(LICENSE_METRICS) as port:
        set_license_values()
        folder = tmp_path_factory.mktemp("prometheus")
        with prometheus_scraping(port, folder, metric_names(LICENSE_METRICS)) as url:
            yield Prometheus(url)


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
    assert status == LICENSE_STATUS
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
