"""`bfm dashboards preview` end to end: a real Prometheus, the real command, headless
Chromium (docs/dashboards.md, "Preview without Grafana").

The test serves the real license and site metric objects of ``failover.telemetry`` on a
prometheus_client server of its own with values it sets, Prometheus (Debian,
``/usr/bin/prometheus``) scrapes them every second, and ``bfm dashboards preview`` runs
as a subprocess for the License and Overview dashboards (the Overview has panels without
data here: allowed), then for the Logs dashboard with a log store URL nobody listens on.
Chromium opens the pages from ``file://``: every panel must be drawn (``data-rendered``),
the License panels must show the values the test set, unreachable panels their error,
and a screenshot must be a real picture. The screenshot is kept in
``$BFM_TEST_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.prometheus_run import (
    LICENSE_METRICS,
    free_port,
    metric_names,
    prometheus_scraping,
    require_prometheus,
    serve_metrics,
    set_license_values,
)

from failover import dashboards_build as builder
from failover import telemetry
from failover.chaos import browser

pytestmark = pytest.mark.e2e

SITES_UP = {"a": 1, "b": 0}
METRICS = (
    *LICENSE_METRICS,
    telemetry.SITE_UP,
    telemetry.CONTROLLER_IS_LEADER,
    telemetry.SHARDS_OWNED,
)
HISTORY_S = 4.0  # a few scrapes, so range queries have points to draw
COMMAND_TIMEOUT_S = 60.0
ORANGE, RED = "rgb(255, 152, 48)", "rgb(242, 73, 92)"  # Grafana's orange and red, as CSS
_PANEL = re.compile(r"<section ([^>]*)>(.*?)</section>", re.S)
_ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')


def set_values() -> None:
    set_license_values()
    for site, up in SITES_UP.items():
        telemetry.SITE_UP.labels(site, "controller").set(up)
        telemetry.CONTROLLER_IS_LEADER.labels(site, "controller").set(site == "a")
        telemetry.SHARDS_OWNED.labels(site, "eep").set(16 if site == "a" else 0)


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the test's metrics every second, once it has a few
    scrapes of every one of them; stopped by its pid afterwards."""
    require_prometheus()
    if browser.chromium_binary() is None:
        pytest.skip(
            f"headless Chromium is not installed (DEBIAN_FRONTEND=noninteractive apt-get "
            f"install -y {browser.APT_PACKAGE})"
        )
    with serve_metrics(METRICS) as port:
        set_values()
        folder = tmp_path_factory.mktemp("prometheus")
        with prometheus_scraping(port, folder, metric_names(METRICS), history_s=HISTORY_S) as url:
            yield url


def preview(out: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The real command, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "failover", "dashboards", "preview", "--out", str(out), *arguments],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def panels_of(dom: str) -> dict[str, dict[str, Any]]:
    """Each drawn panel by title: its attributes, its text, its stat tiles' values."""
    found: dict[str, dict[str, Any]] = {}
    for attributes, inner in _PANEL.findall(dom):
        attrs = {k: html.unescape(v) for k, v in _ATTRIBUTE.findall(attributes)}
        tiles = {
            html.unescape(name): html.unescape(value)
            for name, value in re.findall(r'data-name="([^"]*)" data-value="([^"]*)"', inner)
        }
        text = html.unescape(re.sub(r"<[^>]+>", " ", inner))
        found[attrs["data-title"]] = attrs | {
            "text": " ".join(text.split()),
            "tiles": tiles,
            "html": inner,
        }
    return found


def body_attributes(dom: str) -> dict[str, str]:
    match = re.search(r"<body([^>]*)>", dom)
    assert match, dom[:500]
    return dict(_ATTRIBUTE.findall(match.group(1)))


def png_rows(png: Path) -> tuple[int, int, set[bytes]]:
    """(width, height, the distinct scanlines) of a PNG, decoded here with zlib: a blank
    page has a couple of distinct scanlines, a drawn dashboard hundreds."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", header[:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    stride = 1 + width * channels * depth // 8
    raw = zlib.decompress(idat)
    assert len(raw) == stride * height
    return width, height, {raw[i * stride : (i + 1) * stride] for i in range(height)}


def keep(png: Path) -> None:
    if artifacts := os.environ.get("BFM_TEST_ARTIFACTS"):
        folder = Path(artifacts)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, folder / png.name)
        print(f"screenshot kept: {folder / png.name}")
    print(f"screenshot: {png}")


def test_the_license_and_overview_previews_draw_every_panel_with_the_values_set(
    prometheus_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "preview"
    started = time.monotonic()
    done = preview(
        out,
        "--prometheus",
        prometheus_url,
        "--since",
        "2m",
        "--dashboard",
        "bfm-license",
        "--dashboard",
        "overview",
    )
    print(f"bfm dashboards preview: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"wrote {out / 'bfm-license.html'}" in done.stdout
    assert (out / "bfm-overview.html").is_file()
    index = (out / "index.html").read_text()
    assert 'href="bfm-license.html"' in index
    assert 'href="bfm-overview.html"' in index

    wanted = ("bfm-license", "bfm-overview")
    built = {i.uid: i.model for i in builder.build_all(builder.default_src()) if i.uid in wanted}

    doms = {uid: browser.rendered_dom(out / f"{uid}.html", timeout_s=60) for uid in built}
    for uid, dom in doms.items():
        model = built[uid]
        body = body_attributes(dom)
        assert body.get("data-rendered") == str(len(model["panels"])), (uid, body)
        panels = panels_of(dom)
        assert set(panels) == {panel["title"] for panel in model["panels"]}
        assert all(p["data-state"] != "failed" for p in panels.values()), panels
        assert "site = All" in dom
        if uid == "bfm-overview":
            assert panels["Sites"]["tiles"] == {"a": "up", "b": "DOWN"}
            assert panels["Shards owned per site"]["data-state"] == "data"
            assert "<canvas" in dom  # uPlot drew the time series

    license_panels = panels_of(doms["bfm-license"])
    assert license_panels["License state"]["tiles"] == {"state": "grace"}
    assert ORANGE in license_panels["License state"]["html"]  # its value mapping's colour
    assert license_panels["Grace remaining"]["tiles"] == {"grace remaining": "1 day, 6 hours"}
    assert license_panels["Sites with a valid dongle"]["tiles"] == {"valid dongles": "0"}
    assert RED in license_panels["Sites with a valid dongle"]["html"]  # its threshold under 1
    assert license_panels["Days to expiry"]["tiles"] == {"a": "-2.0 days", "w": "45.0 days"}
    status_text = license_panels["Dongle status"]["text"]
    assert "site status a expired b missing w valid" in status_text, status_text
    assert "grace" in license_panels["License state over time"]["text"]
    assert license_panels["Dongle validity per site"]["text"].count("not valid") >= 3
    for panel in license_panels.values():
        assert panel["data-state"] in ("data", "drawn"), panel

    png = browser.screenshot(
        out / "bfm-license.html", tmp_path / "bfm-license-preview.png", height_px=1100
    )
    width, height, rows = png_rows(png)
    assert (width, height) == (1600, 1100)
    assert len(rows) > 100, f"the screenshot looks blank: {len(rows)} distinct rows"
    keep(png)


def test_an_unreachable_log_store_still_writes_the_page_and_says_so(
    prometheus_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "preview"
    dead = f"http://127.0.0.1:{free_port()}"

    done = preview(out, "--prometheus", prometheus_url, "--loki", dead, "--dashboard", "bfm-logs")

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot reach {dead} (connection refused)" in done.stderr
    assert "failed; the pages show each error in its panel" in done.stderr
    dom = browser.rendered_dom(out / "bfm-logs.html")
    body = body_attributes(dom)
    assert body["data-rendered"] == body["data-panels"], body
    panels = panels_of(dom)
    assert panels["Log lines"]["data-state"] == "error"
    assert f"cannot reach {dead}" in panels["Log lines"]["text"]
    assert 'class="panel-error"' in dom
    # The trace panels have no trace id to show: not run, and said so.
    assert "not run: $trace_id is empty" in panels["Trace"]["text"]
