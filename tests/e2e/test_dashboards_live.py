"""Every dashboard query answers on the live demo, for every site and component it shows
(issue 10; docs/dashboards.md, "Proof on live data").

One run of ``failover.chaos.live_demo.LiveDemo``: Debian Prometheus (the shipped scrape
config, the alert and recording rules, exemplar storage on) scraping every process of
``bfm demo --headless --scenario site-return`` with the embedded log store, plus
Alertmanager and the node exporter. Site a is killed and comes back; then b's eep
process is killed (its site restarts it) and a CPU hog starts in b's gsm process; the
tests run while the demo and the hog still run.

Each dashboard's queries run as Grafana would run them (``failover.dashboards_query``:
variables at "All", ``$__rate_interval`` and friends from the run's time range) through
the real HTTP APIs: Prometheus for metrics and exemplars, the log store for LogQL (Loki's
API) and for traces (Tempo's trace-by-id). Every query must answer without error and with
data, and with a series for every site and component the panel shows (``EXPECTED``;
fault-only panels were given their fault above). The Resources dashboard must single out
the hogged process. No Grafana here: the JSON models' own rules are
tests/unit/test_dashboards.py's. The same live run also shows that every socket the demo
listens on is bound to loopback (issue 11, least exposure).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from failover import dashboards_build as builder
from failover.chaos.alerting import missing_packages
from failover.chaos.browser import chromium_binary, screenshot
from failover.chaos.live_demo import CRASHED, HOGGED, LiveDemo, LiveDemoError
from failover.core.topology import DEFAULT_COMPONENTS
from failover.dashboards_preview import write_previews
from failover.dashboards_query import (
    Backends,
    TargetResult,
    Window,
    expand,
    run_dashboard,
    variable_values,
)

pytestmark = pytest.mark.e2e

WORKERS = frozenset({"a", "b"})
SITES = frozenset({"a", "b", "w"})
MODULES = frozenset(DEFAULT_COMPONENTS)
PRODUCER = ("a", "producer")  # the demo's producer sends from site a
Pair = tuple[str, str]
MODULE_PAIRS = frozenset((site, c) for site in WORKERS for c in MODULES)
ROUTERS = frozenset((site, "router") for site in WORKERS)
PROCESSES = MODULE_PAIRS | {(site, "bfm-site") for site in SITES} | {PRODUCER}
CONTROL = frozenset({(s, "controller") for s in SITES} | {(s, "agent") for s in WORKERS})
TRACE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Shows:
    """What a query must answer with: at least these sites, components, (site, component)
    pairs and values of ``label``; ``series`` exactly that many (if given); ``instances``
    exactly that many hosts (if given)."""

    sites: frozenset[str] = frozenset()
    components: frozenset[str] = frozenset()
    pairs: frozenset[Pair] = frozenset()
    label: str = ""
    values: frozenset[str] = frozenset()
    series: int | None = None
    instances: int | None = None
    why: str = ""


def by_legend(legend: str) -> Shows:
    """The default: a panel whose legend names the site and component shows every module
    at every worker site; one naming only the site, every worker site; only the
    component, every module; a host (``{{instance}}``) panel shows this one host."""
    site, component = "{{site}}" in legend, "{{component}}" in legend
    if "{{instance}}" in legend:
        return Shows(instances=1, why="one host: the node panels show one node")
    if site and component:
        return Shows(pairs=MODULE_PAIRS)
    if site:
        return Shows(sites=WORKERS)
    if component:
        return Shows(components=MODULES)
    return Shows()


FAULT = "shows data only during faults: the run's faults"
EXPECTED: dict[tuple[str, str], Shows] = {  # (dashboard uid, panel title) -> what it shows
    ("bfm-components", "Messages per second by component and site"): Shows(
        pairs=MODULE_PAIRS | ROUTERS | {PRODUCER}
    ),
    ("bfm-components", "Messages per second by outcome"): Shows(
        components=MODULES | {"router", "producer"}, label="outcome", values=frozenset({"applied"})
    ),
    ("bfm-components", "Failed messages per second by reason"): Shows(
        components=frozenset({"producer"}), why=FAULT
    ),
    ("bfm-components", "Restarts in the last 15 minutes"): Shows(
        pairs=frozenset({CRASHED}), why=FAULT
    ),
    ("bfm-components", "Fencing refusals in the last 5 minutes"): Shows(why=FAULT),
    ("bfm-components", "Latency p99 by component and site"): Shows(pairs=MODULE_PAIRS | {PRODUCER}),
    ("bfm-components", "Latency p50 by component and site"): Shows(pairs=MODULE_PAIRS | {PRODUCER}),
    ("bfm-controller", "Leader"): Shows(series=1, why="one leader"),
    ("bfm-controller", "Replicas seeing a leader"): Shows(sites=SITES),
    ("bfm-controller", "Leadership over time"): Shows(sites=SITES),
    ("bfm-controller", "Lease renewal p99"): Shows(pairs=CONTROL),
    ("bfm-controller", "Lease renewals per second"): Shows(pairs=CONTROL),
    ("bfm-controller", "Decision latency per phase (p99)"): Shows(
        label="phase", values=frozenset({"detect", "decide", "fence", "record"}), why=FAULT
    ),
    ("bfm-controller", "Detection and recovery per failed site"): Shows(
        sites=frozenset({"a"}), why=FAULT
    ),
    ("bfm-controller", "Store reachable"): Shows(pairs=CONTROL),
    ("bfm-controller", "Store request latency p99 by operation"): Shows(
        label="op", values=frozenset({"get", "list", "compare_and_set"})
    ),
    ("bfm-controller", "Store requests by outcome"): Shows(sites=SITES),
    ("bfm-license", "Days to expiry"): Shows(sites=SITES),
    ("bfm-license", "Dongle status"): Shows(sites=SITES),
    ("bfm-license", "Dongle validity per site"): Shows(sites=SITES),
    ("bfm-logs", "Log lines per second by level"): Shows(
        label="level", values=frozenset({"info", "warning"})
    ),
    ("bfm-logs", "Warnings and errors by site and component"): Shows(
        pairs=frozenset({HOGGED}), why="the hog's warning"
    ),
    ("bfm-logs", "Log lines"): Shows(sites=SITES),
    ("bfm-logs", "Controller decisions"): Shows(components=frozenset({"bfm-site"})),
    ("bfm-logs", "Delayed messages"): Shows(pairs=frozenset({PRODUCER}), why=FAULT),
    ("bfm-logs", "Log lines of the trace"): Shows(
        components=frozenset({"bfm-site"}), why="a failover decision's trace"
    ),
    ("bfm-logs", "Log lines dropped (share)"): Shows(pairs=PROCESSES),
    ("bfm-logs", "Log lines shipped per second"): Shows(pairs=PROCESSES),
    ("bfm-overview", "Processes answering scrapes"): Shows(sites=SITES),
    ("bfm-overview", "Leader"): Shows(series=1, why="one leader"),
    ("bfm-overview", "Alarms per second by outcome"): Shows(sites=frozenset({"a"})),
    ("bfm-overview", "Alarm latency (send to ack)"): Shows(sites=frozenset({"a"})),
    ("bfm-overview", "Alarms not acknowledged at first (share)"): Shows(sites=frozenset({"a"})),
    ("bfm-overview", "Highest epoch per component"): Shows(components=MODULES),
    ("bfm-resources", "Busiest processes"): Shows(pairs=PROCESSES),
    ("bfm-resources", "CPU per process, top 5"): Shows(pairs=frozenset({HOGGED})),
    ("bfm-resources", "Resident memory per process"): Shows(pairs=PROCESSES),
    ("bfm-resources", "File descriptors per process"): Shows(pairs=PROCESSES),
    ("bfm-resources", "CPU per site (BFM processes)"): Shows(sites=SITES),
}
ANNOTATIONS: dict[str, Shows] = {
    "Failovers": Shows(components=MODULES, why="site a's failover moved every component"),
    "Planned moves": Shows(why="the hand-back to a"),
    "Sites down": Shows(sites=frozenset({"a"}), why=FAULT),
}


@dataclass
class LiveRun:
    demo: LiveDemo
    window: Window
    trace_id: str  # a failover decision's trace, for the trace panels

    @property
    def backends(self) -> Backends:
        url = self.demo.logstore_url
        return Backends(self.demo.prometheus_url, loki_url=url, traces_url=url)

    def results(self, uid: str, **selections: list[str]) -> list[TargetResult]:
        (model,) = [b.model for b in BUILT if b.model["uid"] == uid]
        return run_dashboard(model, self.backends, self.window, selections)


BUILT = builder.build_all(builder.default_src())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    if missing := missing_packages():
        pytest.skip(
            f"the live dashboards test needs {', '.join(missing)}; as root: "
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y {' '.join(missing)}"
        )
    with LiveDemo(tmp_path_factory.mktemp("dashboards-live")) as demo:
        try:
            demo.run_faults()
        except LiveDemoError as err:
            pytest.fail(str(err))
        window = Window(demo.timeline.started_s, time.time())
        yield LiveRun(demo, window, _failover_trace_id(demo.logstore_url, window))


def _failover_trace_id(logstore_url: str, window: Window) -> str:
    """The trace id of the controller's failover decision (its log line carries it)."""
    query = '{component="bfm-site"} |= "decision" | json | event="decision" |= "failover"'
    answer = requests.get(
        f"{logstore_url}/loki/api/v1/query_range",
        params={
            "query": query,
            "start": str(int(window.start_s * 1e9)),
            "end": str(int(time.time() * 1e9)),
            "limit": "50",
        },
        timeout=10,
    ).json()
    for stream in answer["data"]["result"]:
        for value in stream["values"]:  # [ns, line] or [ns, line, structured metadata]
            metadata = value[2] if len(value) > 2 else {}
            if found := TRACE_ID.search(str(metadata.get("trace_id", "")) or value[1]):
                return found.group()
    pytest.fail(f"no failover decision with a trace id in the log store: {answer}")


def _pairs(result: TargetResult) -> set[Pair]:
    return {
        (s.labels["site"], s.labels["component"])
        for s in result.series
        if "site" in s.labels and "component" in s.labels
    }


def _shortfall(result: TargetResult, shows: Shows) -> list[str]:
    """What ``result`` lacks of what it must show (empty: all there)."""
    wanted: list[tuple[str, set[Any], frozenset[Any]]] = [
        ("sites", result.label_values("site"), shows.sites),
        ("components", result.label_values("component"), shows.components),
        ("(site, component) pairs", _pairs(result), shows.pairs),
        (f"values of {shows.label}", result.label_values(shows.label), shows.values),
    ]
    missing = [f"{what} {sorted(need - got)}" for what, got, need in wanted if need - got]
    if shows.series is not None and len(result.series) != shows.series:
        missing.append(f"{shows.series} series, not {len(result.series)}")
    hosts = result.label_values("instance")
    if shows.instances is not None and len(hosts) != shows.instances:
        missing.append(f"{shows.instances} host(s), not {sorted(hosts)}")
    return missing


def _judge(results: list[TargetResult]) -> list[str]:
    problems = []
    for result in results:
        where = f"{result.dashboard} / {result.panel} / {result.ref_id}: {result.expr}"
        if result.error or result.skipped:
            problems.append(f"{where}\n    error: {result.error or result.skipped}")
            continue
        if not result.has_data():
            problems.append(f"{where}\n    no data")
            continue
        name = result.panel.removeprefix("annotation: ")
        if result.panel_type == "annotation":
            shows = ANNOTATIONS[name]
        else:
            shows = EXPECTED.get((result.dashboard, name), by_legend(result.legend))
        if lacking := _shortfall(result, shows):
            problems.append(f"{where}\n    lacks {'; '.join(lacking)} ({shows.why or 'legend'})")
    return problems


@pytest.mark.parametrize("uid", sorted(b.model["uid"] for b in BUILT))
def test_every_query_answers_for_everything_it_shows(live: LiveRun, uid: str) -> None:
    results = live.results(uid, trace_id=[live.trace_id])
    assert results, f"{uid} ran no query"
    problems = _judge(results)
    assert problems == [], f"{len(problems)} of {len(results)} queries of {uid}:\n" + "\n".join(
        problems
    )
    print(f"{uid}: {len(results)} queries answered, window {live.window}")


def test_every_expectation_names_a_real_panel() -> None:
    """A renamed panel must not leave its expectation behind (the test could not fail)."""
    titles = {
        (b.model["uid"], panel["title"]) for b in BUILT for panel in b.model.get("panels", [])
    }
    assert set(EXPECTED) - titles == set()
    names = {a["name"] for b in BUILT for a in b.model["annotations"]["list"] if a.get("expr")}
    assert names == set(ANNOTATIONS)


LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+), )?(?P<label>\w+)\)")
VARIABLE_SHOWS = {"site": WORKERS, "component": MODULES}


def _variable_options(live: LiveRun, variable: dict[str, Any], values: dict[str, str]) -> set[str]:
    """What Grafana's drop-down would list: the label's values over the run, through
    Prometheus's or Loki's label-values API, the other variables at "All"."""
    match = LABEL_VALUES.fullmatch(variable["query"])
    assert match, f"variable {variable['name']}: not a label_values query: {variable['query']}"
    selector = expand(match["selector"] or "", values)
    span = {"start": str(int(live.window.start_s)), "end": str(int(live.window.end_s))}
    if variable["datasource"]["type"] == "loki":
        url = f"{live.demo.logstore_url}/loki/api/v1/label/{match['label']}/values"
        params = {**span, **({"query": selector} if selector else {})}
    else:
        url = f"{live.demo.prometheus_url}/api/v1/label/{match['label']}/values"
        params = {**span, "match[]": selector}
    answer = requests.get(url, params=params, timeout=10).json()
    assert answer["status"] == "success", f"variable {variable['name']}: {answer}"
    return set(answer.get("data") or [])


@pytest.mark.parametrize("uid", sorted(b.model["uid"] for b in BUILT))
def test_every_variable_lists_the_sites_and_components(live: LiveRun, uid: str) -> None:
    (model,) = [b.model for b in BUILT if b.model["uid"] == uid]
    values = variable_values(model)
    listed = {
        variable["name"]: _variable_options(live, variable, values)
        for variable in model["templating"]["list"]
        if variable.get("type") == "query"
    }
    assert listed, f"{uid} has no label variable"
    for name, options in listed.items():
        lacking = VARIABLE_SHOWS.get(name, frozenset()) - options
        assert options and not lacking, f"{uid}: ${name} lists {sorted(options)}, lacks {lacking}"
    print(f"{uid}: { ({k: sorted(v) for k, v in listed.items()}) }")


def test_latency_panels_carry_exemplars_that_lead_to_traces(live: LiveRun) -> None:
    """The RED latency queries return exemplars; their trace ids open in the trace store."""
    latency = [r for r in live.results("bfm-components") if r.panel.startswith("Latency")]
    exemplars = [e for r in latency for s in r.series for e in s.exemplars]
    assert exemplars, "no exemplar on the latency panels"
    assert all(TRACE_ID.fullmatch(trace_id) for _, _, trace_id in exemplars)
    found = 0
    for _, _, trace_id in exemplars[:20]:
        answer = requests.get(f"{live.demo.logstore_url}/api/traces/{trace_id}", timeout=10)
        found += answer.status_code == 200
    assert found, "none of 20 exemplar trace ids is in the trace store"
    print(f"{len(exemplars)} exemplars; {found} of {min(20, len(exemplars))} traces found")


def _last(result: TargetResult) -> dict[Pair, float]:
    return {
        (s.labels.get("site", ""), s.labels.get("component", "")): s.points[-1][1]
        for s in result.series
        if s.points
    }


def test_the_resources_dashboard_singles_out_the_cpu_hog(
    live: LiveRun, record_property: Callable[[str, object], None]
) -> None:
    results = {(r.panel, r.ref_id): r for r in live.results("bfm-resources")}
    for panel in ("Busiest processes", "CPU per process, top 5"):
        ref = "A"
        cpu = _last(results[(panel, ref)])
        ranked = sorted(cpu.items(), key=lambda item: -item[1])
        (top, top_cores), (second, second_cores) = ranked[0], ranked[1]
        record_property(f"{panel} top", f"{top} {top_cores:.2f} cores, then {second}")
        print(f"{panel}: {top} {top_cores:.2f} cores; next {second} {second_cores:.2f}")
        assert top == HOGGED, f"{panel} puts {top} first, not the hog {HOGGED}: {ranked[:4]}"
        assert top_cores > 2 * second_cores, f"the hog does not stand out: {ranked[:4]}"


def test_a_screenshot_of_the_overview(live: LiveRun, tmp_path: Path) -> None:
    """The overview drawn by ``bfm dashboards preview`` in headless Chromium, kept in
    ``$BFM_TEST_ARTIFACTS`` (the README's picture comes from such a run)."""
    if chromium_binary() is None:
        pytest.skip("headless Chromium is missing: apt-get install -y chromium")
    out = tmp_path / "preview"
    (page,) = write_previews(
        [b for b in BUILT if b.model["uid"] == "bfm-overview"],
        live.backends,
        live.window,
        out,
    )
    png = screenshot(page, tmp_path / "overview.png", width_px=1600, height_px=1500)
    assert png.stat().st_size > 20_000
    if artifacts := os.environ.get("BFM_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(artifacts) / "overview-failover.png")
    print(f"screenshot: {png}")


# -- least exposure: the demo opens nothing beyond the loopback interface ------------------

LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1 in /proc/net
_LISTEN = "0A"  # TCP state LISTEN; UDP sockets are "07" (unconnected) and counted too


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _bound(table: str) -> dict[str, tuple[str, str]]:
    """inode -> (local address hex, state) of every socket in /proc/net/<table>."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, state, inode = fields[1].split(":")[0], fields[3], fields[9]
            found[inode] = (address, state)
    return found


def test_every_listener_of_the_demo_binds_to_loopback(live: LiveRun) -> None:
    """Issue 11 (least exposure): every TCP listener and UDP socket of every process of
    the demo run (sites, components, producer, log store) is bound to 127.0.0.1 or ::1."""
    run_dir = str(live.demo.run_dir).encode()
    pids = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and run_dir in _read(p / "cmdline")
    ]
    assert len(pids) >= 10, f"found only {len(pids)} processes of the demo"
    inodes = set().union(*(_socket_inodes(pid) for pid in pids))
    open_to = []
    listening = 0
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for inode, (address, state) in _bound(table).items():
            if inode not in inodes or (table.startswith("tcp") and state != _LISTEN):
                continue
            listening += 1
            if address not in LOOPBACK:
                open_to.append(f"{table} {address} (socket {inode})")
    assert listening >= 10, "the demo's listeners were not found"
    assert open_to == [], f"sockets bound beyond loopback: {open_to}"
    print(f"{listening} listening sockets of {len(pids)} processes, all on loopback")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
