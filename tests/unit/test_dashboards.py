"""The dashboards in dashboards/ (docs/dashboards.md): each renders, and its JSON keeps
Grafana's model rules and BFM's conventions: unique panel ids, panels inside the
24-column grid and never overlapping, a description on every panel, every datasource,
$variable and dashboard link resolvable, a stable uid, a modern schemaVersion; every
Prometheus query parses (promtool) and names only metrics from docs/metrics.md, the node
exporter, `up`, `ALERTS` or a recording rule of alerts/rules/; every LogQL query is in
the log store's subset and uses only its labels. Each dashboard shows what issue 10 asks
of it. The shared helpers refuse what would break those rules; the builder names the
file at fault; `bfm dashboards build` writes all six and refuses bad input with exit 2."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bfm_observe.logstore import logql
from failover import dashboards_build as builder
from failover.cli.main import run

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
METRICS_DOC = REPO / "docs" / "metrics.md"
RULE_FILES = sorted((REPO / "alerts" / "rules").glob("*.yaml"))
SOURCES = sorted(DASHBOARDS.glob("*.dashboard.py"))
GRID_WIDTH = 24
UIDS = {
    "bfm-overview",
    "bfm-controller",
    "bfm-components",
    "bfm-resources",
    "bfm-logs",
    "bfm-license",
}
# Grafana's own variables, always defined.
BUILTIN_VARIABLES = {
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__all",
    "__dashboard",
    "__org",
    "__user",
    "__name",
    "__auto",
    "timeFilter",
}
# How the checks below expand Grafana's time variables (user variables: their "All").
BUILTIN_VALUES = {"__rate_interval": "1m", "__interval": "1m", "__auto": "1m", "__range": "1h"}
VARIABLE_USE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")
METRIC = re.compile(r"\bbfm_[a-z_]+")
# The log store's stream labels (bfm_observe/loki.py); trace_id and span_id are metadata.
LOG_LABELS = {"site", "component", "level", "namespace"}
# What issue 10 asks each dashboard to show: every one of these metrics is queried.
SHOWS = {
    "bfm-overview": {
        "bfm_site_up",
        "up",
        "bfm_shards_owned",
        "bfm_epoch_max",
        "bfm_messages_total",
        "bfm_message_duration_seconds_bucket",
        "ALERTS",
    },
    "bfm-controller": {
        "bfm_controller_is_leader",
        "bfm_leader_present",
        "bfm_lease_renewal_duration_seconds_count",
        "bfm_decision_phase_duration_seconds_bucket",
        "bfm_detection_seconds_sum",
        "bfm_recovery_seconds_sum",
        "bfm_store_reachable",
        "bfm_store_request_duration_seconds_bucket",
        "bfm_store_request_duration_seconds_count",
        "bfm_failsafe_active",
        "bfm_site_fenced",
        "bfm_failover_in_progress",
    },
    "bfm-components": {
        "bfm_messages_total",
        "bfm_message_duration_seconds_bucket",
        "bfm_component_up",
    },
    "bfm-resources": {
        "bfm_process_cpu_seconds_total",
        "bfm_process_resident_memory_bytes",
        "bfm_process_open_fds",
        "bfm_process_max_fds",
        "node_load1",
        "node_network_receive_bytes_total",
        "node_disk_io_time_seconds_total",
    },
    "bfm-logs": {"bfm_log_lines_shipped_total"},
}

GOOD_DASHBOARD = """
from grafanalib import core as G
dashboard = G.Dashboard(title="T", uid="{uid}", panels=[])
"""


# -- every dashboard -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=SOURCES, ids=[p.name for p in SOURCES])
def built(request: pytest.FixtureRequest) -> builder.BuiltDashboard:
    return builder.build(request.param)


@pytest.fixture(scope="module")
def every() -> list[builder.BuiltDashboard]:
    return builder.build_all(DASHBOARDS)


def all_panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in model.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def queries(model: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, datasource type, text) of every query: panel targets, annotations and
    query variables."""
    found = [
        (f"panel {panel['title']!r}", target["datasource"]["type"], target["expr"])
        for panel in all_panels(model)
        for target in panel.get("targets", [])
    ]
    found += [
        (f"annotation {a['name']!r}", a["datasource"]["type"], a["expr"])
        for a in model["annotations"]["list"]
    ]
    found += [
        (f"variable ${var['name']}", var["datasource"]["type"], var["query"])
        for var in model["templating"]["list"]
        if var["type"] == "query"
    ]
    return found


def expand(model: dict[str, Any], text: str, where: str) -> str:
    """``text`` with every variable as Grafana expands it on "All" (a text box: empty)."""
    values = dict(BUILTIN_VALUES)
    for var in model["templating"]["list"]:
        values[var["name"]] = var["allValue"] if var["type"] == "query" else var["query"]

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"{where}: no value to expand ${name} with"
        return str(values[name])

    return VARIABLE_USE.sub(value, text)


def test_all_six_dashboards_are_built(every: list[builder.BuiltDashboard]) -> None:
    assert {item.uid for item in every} == UIDS
    assert len(SOURCES) == len(UIDS)


def test_panel_ids_are_unique(built: builder.BuiltDashboard) -> None:
    ids = [panel.get("id") for panel in all_panels(built.model)]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(ids) == len(set(ids)), ids


def test_panels_fit_the_grid_and_never_overlap(built: builder.BuiltDashboard) -> None:
    boxes = []
    for panel in built.model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] >= 1 and pos["h"] >= 1, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_WIDTH, (panel["title"], pos)
        boxes.append((panel["title"], pos))
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{title_a!r} {a} overlaps {title_b!r} {b}"


def test_every_panel_has_a_title_and_a_description(built: builder.BuiltDashboard) -> None:
    assert built.model["description"].strip()
    for panel in all_panels(built.model):
        assert panel.get("title", "").strip(), panel
        assert (panel.get("description") or "").strip(), f"{panel['title']!r} has no description"


def test_every_datasource_is_a_datasource_variable(built: builder.BuiltDashboard) -> None:
    variables = {var["name"]: var for var in built.model["templating"]["list"]}
    refs = []  # (where, reference); only rows and datasource variables go without one
    for panel in all_panels(built.model):
        if panel["type"] != "row":
            refs.append((f"panel {panel['title']!r}", panel.get("datasource")))
        refs += [
            (f"panel {panel['title']!r} query {t['refId']}", t.get("datasource"))
            for t in panel.get("targets", [])
        ]
    refs += [
        (f"variable ${v['name']}", v.get("datasource"))
        for v in variables.values()
        if v["type"] not in ("datasource", "textbox")
    ]
    refs += [
        (f"annotation {a['name']!r}", a.get("datasource"))
        for a in built.model["annotations"]["list"]
    ]
    assert refs
    for where, ref in refs:
        assert isinstance(ref, dict), f"{where}: datasource {ref!r} is not a {{type, uid}}"
        match = re.fullmatch(r"\$\{(\w+)\}", ref["uid"])
        assert match, f"{where}: datasource uid {ref['uid']!r} is not a ${{DS_...}} variable"
        var = variables.get(match.group(1))
        assert var is not None, f"{where}: ${{{match.group(1)}}} is not a variable"
        assert var["type"] == "datasource", (where, var["type"])
        assert var["query"] == ref["type"], f"{where}: a {ref['type']} query on a {var['query']}"
    # A panel's queries all go to the panel's datasource (no "-- Mixed --").
    for panel in all_panels(built.model):
        for target in panel.get("targets", []):
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_variable_a_query_uses_is_defined(built: builder.BuiltDashboard) -> None:
    defined = {var["name"] for var in built.model["templating"]["list"]} | BUILTIN_VARIABLES
    for where, _, text in queries(built.model):
        used = {next(g for g in m.groups() if g) for m in VARIABLE_USE.finditer(text)}
        assert used <= defined, f"{where} uses undefined {sorted(used - defined)}: {text}"


def test_every_link_leads_to_a_bfm_dashboard(built: builder.BuiltDashboard) -> None:
    for panel in all_panels(built.model):
        for link in panel.get("links", []):
            match = re.match(r"/d/([a-z0-9-]+)\?", link["url"])
            assert match and match.group(1) in UIDS, (panel["title"], link)
            assert "${__url_time_range}" in link["url"], link  # keeps the time range


def test_uid_is_stable_and_named_after_the_file(built: builder.BuiltDashboard) -> None:
    name = built.source.name.removesuffix(".dashboard.py")
    assert built.uid == f"bfm-{name}"
    again = builder.build(built.source)
    assert again.json_text() == built.json_text()  # a rebuild changes no byte


def test_schema_version_and_conventions(built: builder.BuiltDashboard) -> None:
    model = built.model
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    assert model["title"].startswith("BFM / ")
    assert "bfm" in model["tags"]
    assert any(link["type"] == "dashboards" and "bfm" in link["tags"] for link in model["links"]), (
        model["links"]
    )
    assert model["rows"] == []  # panels with gridPos only, never legacy rows


def test_site_and_component_variables(built: builder.BuiltDashboard) -> None:
    variables = {var["name"]: var for var in built.model["templating"]["list"]}
    wanted = {"site"} if built.uid == "bfm-license" else {"site", "component"}
    for name in wanted:
        var = variables[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"], var
        # Loki refuses a selector matching "" everywhere: its "All" must match something.
        assert var["allValue"] == (".+" if var["datasource"]["type"] == "loki" else ".*")


# -- the queries -----------------------------------------------------------------------------


def documented_metrics() -> set[str]:
    return set(re.findall(r"`(bfm_[a-z_]+)`", METRICS_DOC.read_text()))


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
    "group_left",
    "group_right",
}


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, groupings and function calls are taken out."""
    variable = re.fullmatch(r"label_values\((.*), \w+\)", promql, re.S)
    text = _STRING.sub('""', variable.group(1) if variable else promql)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def test_metric_names_finds_what_a_query_selects() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (site, le) (rate(bfm_x_bucket{a="b c"}[5m])))'
        " / on (site) group_left max without (job) (up offset 5m) > bool 1"
        ' or bfm:site:y:ratio{z=~"$site|"} unless vector(1) + node_load1 * time()'
    )
    assert metric_names(expr) == {"bfm_x_bucket", "up", "bfm:site:y:ratio", "node_load1"}
    assert metric_names('label_values(bfm_y{site=~"$site"}, component)') == {"bfm_y"}


def test_every_metric_is_in_the_catalogue(built: builder.BuiltDashboard) -> None:
    documented = documented_metrics()
    recorded = recorded_names()
    seen = set()
    for where, kind, text in queries(built.model):
        if kind != "prometheus":
            continue
        for name in metric_names(text):
            seen.add(name)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name.startswith("bfm:"):
                assert name in recorded, f"{where}: {name} is no recording rule in alerts/rules/"
            elif name.startswith("bfm_"):
                assert name in documented or base in documented, (
                    f"{where}: {name} is not in docs/metrics.md"
                )
            else:
                assert name in {"up", "ALERTS"} or name.startswith("node_"), (where, name)
    assert any(name.startswith("bfm") for name in seen), "the dashboard queries no BFM metric"
    assert SHOWS.get(built.uid, set()) <= seen, sorted(SHOWS[built.uid] - seen)


def test_every_prometheus_query_parses(every: list[builder.BuiltDashboard], tmp_path: Path) -> None:
    """promtool parses each query (its variables expanded as on "All") as a rule."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH; as root: apt-get install -y prometheus")
    rules, origin = [], {}
    for item in every:
        for where, kind, text in queries(item.model):
            if kind == "prometheus" and not text.startswith("label_values("):
                record = f"check_{len(rules)}"
                origin[record] = f"{item.uid} {where}"
                rules.append({"record": record, "expr": expand(item.model, text, where)})
    path = tmp_path / "dashboards.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", "--lint=none", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    culprits = [origin[r] for r in re.findall(r'"(check_\d+)"', done.stdout + done.stderr)]
    assert done.returncode == 0, f"{culprits}: {done.stdout}{done.stderr}"
    assert len(rules) > 50


def test_rare_events_are_seen_when_their_series_is_new(tmp_path: Path) -> None:
    """A failover's counter and a failed site's detection histogram appear with the
    failure itself (prometheus-client creates a labelled series at its first use):
    the Failovers annotation and the detection panel still show it, for the window after
    it only; promtool evaluates the dashboards' own queries on such series."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH; as root: apt-get install -y prometheus")
    overview, controller = model_of("overview"), model_of("controller")
    (failovers,) = [a["expr"] for a in overview["annotations"]["list"] if a["name"] == "Failovers"]
    panel = by_title(controller)["Detection and recovery per failed site"]
    detect = expand(controller, exprs(panel)[0], "detect")
    born_at_2m = "_x8 {}x40"  # 15 s steps: no sample before 2 min
    series = {
        'bfm_failovers_total{kind="failover", component="eap", site="b"}': born_at_2m.format(1),
        'bfm_failovers_total{kind="initial", component="eap", site="b"}': "1x48",
        'bfm_detection_seconds_sum{site="a", component="controller"}': born_at_2m.format(1.7),
        'bfm_detection_seconds_count{site="a", component="controller"}': born_at_2m.format(1),
    }
    cases = [
        (failovers, "2m30s", [{"labels": '{component="eap", kind="failover"}', "value": 1}]),
        (failovers, "5m", []),
        (detect, "3m", [{"labels": '{site="a"}', "value": 1.7}]),
        (detect, "9m", []),
    ]
    doc = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": at, "exp_samples": samples}
                    for expr, at, samples in cases
                ],
            }
        ],
    }
    path = tmp_path / "rare_events_test.yaml"
    path.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_loki_query_is_in_the_log_store_subset(built: builder.BuiltDashboard) -> None:
    found = 0
    for where, kind, text in queries(built.model):
        if kind != "loki":
            continue
        found += 1
        expr = expand(built.model, text, where)
        variable = re.fullmatch(r"label_values\((?:(\{.*\}), )?(\w+)\)", expr)
        if variable:
            assert variable.group(2) in LOG_LABELS, where
            expr = variable.group(1) or '{site=~".+"}'
        try:
            logql.parse(expr)
        except logql.LogQLError as err:
            pytest.fail(f"{where}: {err} in {expr}")
        selector = re.match(r"(?:\w+(?: by \([\w, ]*\))? \()*\w*\(?(\{[^}]*\})", expr)
        assert selector, expr
        labels = set(re.findall(r"(\w+)\s*[=!]~?", selector.group(1)))
        assert labels <= LOG_LABELS, f"{where}: {sorted(labels - LOG_LABELS)} are not stream labels"
    if built.uid == "bfm-logs":
        assert found >= 8


# -- what each dashboard shows ---------------------------------------------------------------


def model_of(name: str) -> dict[str, Any]:
    return builder.build(DASHBOARDS / f"{name}.dashboard.py").model


def by_title(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {panel["title"]: panel for panel in all_panels(model)}


def exprs(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel["targets"]]


def threshold_values(panel: dict[str, Any]) -> list[float | None]:
    return [step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_overview_marks_failovers_and_follows_the_alarm_path() -> None:
    model = model_of("overview")
    annotations = {a["name"]: a for a in model["annotations"]["list"]}
    assert set(annotations) == {"Failovers", "Planned moves", "Sites down"}
    failovers = annotations["Failovers"]["expr"]
    # Counted from the counter's increases, a series born by the failover included.
    assert 'bfm_failovers_total{kind=~"failover"}' in failovers
    assert "unless" in failovers and "offset 1m" in failovers and "increase(" in failovers
    panels = by_title(model)
    for title in ("Alarms per second by outcome", "Alarm latency (send to ack)"):
        for expr in exprs(panels[title]):
            assert 'component="producer", kind="alarm"' in expr, (title, expr)
    assert threshold_values(panels["Alarm latency (send to ack)"])[-1] == 2.5  # the alert's
    (firing,) = panels["Firing alerts"]["targets"]
    assert firing["expr"].startswith('ALERTS{alertstate="firing"') and firing["format"] == "table"
    assert "bfm_shards_owned" in exprs(panels["Shards owned per site"])[0]
    assert "by (site, component)" in exprs(panels["Shards owned per site"])[0]
    site = panels["Sites"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert site["0"]["color"] == "red" and site["1"]["color"] == "green"


def test_controller_shows_leases_decisions_store_and_failsafe() -> None:
    panels = by_title(model_of("controller"))
    assert "by (phase, le)" in exprs(panels["Decision latency per phase (p99)"])[0]
    assert "by (op, le)" in exprs(panels["Store request latency p99 by operation"])[0]
    assert "by (site, outcome)" in exprs(panels["Store requests by outcome"])[0]
    assert threshold_values(panels["Lease renewal p99"])[-1] == 0.25  # BfmLeaseRenewalSlow's
    detect, recover = exprs(panels["Detection and recovery per failed site"])
    assert "bfm_detection_seconds_sum" in detect and "bfm_recovery_seconds_count" in recover
    for title in ("Failsafe", "Fenced", "Failsafe and fencing over time"):
        assert panels[title]["fieldConfig"]["defaults"]["mappings"], title


def test_components_latency_panels_carry_exemplars_to_the_trace_datasource() -> None:
    model = model_of("components")
    variables = {var["name"]: var for var in model["templating"]["list"]}
    assert (variables["DS_TRACES"]["type"], variables["DS_TRACES"]["query"]) == (
        "datasource",
        "tempo",
    )
    assert variables["trace_id"]["type"] == "textbox"
    assert variables["kind"]["type"] == "query"
    panels = by_title(model)
    latency = [p for title, p in panels.items() if title.startswith("Latency ")]
    assert len(latency) == 2
    for panel in latency:
        for target in panel["targets"]:
            assert target["exemplar"] is True, panel["title"]
            assert "bfm_message_duration_seconds_bucket" in target["expr"]
    others = [t for p in panels.values() if p not in latency for t in p.get("targets", [])]
    assert not any(t.get("exemplar") for t in others)
    (trace,) = panels["Trace"]["targets"]
    assert panels["Trace"]["type"] == "traces"
    assert (trace["datasource"]["uid"], trace["query"]) == ("${DS_TRACES}", "$trace_id")
    failed = exprs(panels["Failed messages per second by reason"])[0]
    assert 'outcome!~"acked|forwarded|applied|duplicate"' in failed


def test_resources_single_out_the_saturated_resource_and_process() -> None:
    model = model_of("resources")
    text = json.dumps(model)
    assert "label_replace" not in text  # one node exporter is never relabelled as sites
    for where, _, expr in queries(model):
        for name in metric_names(expr):
            if name.startswith("node_"):
                assert re.search(r'job="node", site=~"\$site\|"', expr), (where, expr)
    panels = by_title(model)
    busiest = panels["Busiest processes"]
    assert busiest["options"]["sortBy"] == [{"displayName": "CPU", "desc": True}]
    assert [t["id"] for t in busiest["transformations"]] == ["merge", "organize"]
    renamed = busiest["transformations"][1]["options"]["renameByName"]
    assert set(renamed.values()) == {"CPU", "memory", "file descriptors"}
    cpu = next(o for o in busiest["fieldConfig"]["overrides"] if o["matcher"]["options"] == "CPU")
    properties = {p["id"]: p["value"] for p in cpu["properties"]}
    assert properties["thresholds"]["steps"][-1] == {"color": "red", "value": 0.9}
    assert "bfm_process_cpu_seconds_total" in busiest["targets"][0]["expr"]
    saturation = panels["Host saturation now"]
    assert saturation["type"] == "bargauge"
    assert saturation["fieldConfig"]["defaults"]["max"] == 1
    assert threshold_values(saturation)[-1] == 0.9
    assert exprs(panels["CPU per process, top 5"])[0].startswith("topk(5, ")


def test_logs_filter_by_labels_and_search_by_trace_id() -> None:
    model = model_of("logs")
    variables = {var["name"]: var for var in model["templating"]["list"]}
    for name in ("site", "component", "level"):
        assert variables[name]["datasource"]["type"] == "loki", name
    assert variables["trace_id"]["type"] == variables["search"]["type"] == "textbox"
    panels = by_title(model)
    (trace_lines,) = exprs(panels["Log lines of the trace"])
    # Structured metadata, never a label; every site: a trace crosses them.
    assert trace_lines == '{site=~".+"} | trace_id="$trace_id"'
    assert panels["Log lines of the trace"]["options"]["sortOrder"] == "Ascending"
    (lines,) = exprs(panels["Log lines"])
    assert lines.startswith('{site=~"$site", component=~"$component", level=~"$level"}')
    assert exprs(panels["Log lines per second by level"])[0].startswith("sum by (level) (rate(")
    assert panels["Trace"]["targets"][0]["datasource"]["uid"] == "${DS_TRACES}"
    for title in ("Log lines", "Controller decisions", "Delayed messages"):
        assert panels[title]["type"] == "logs", title


# -- the License dashboard -----------------------------------------------------------------


def test_license_panels_and_their_queries() -> None:
    model = builder.build(DASHBOARDS / "license.dashboard.py").model
    panels = {panel["title"]: panel for panel in all_panels(model)}
    assert {
        "License state",
        "Grace remaining",
        "Sites with a valid dongle",
        "License state over time",
        "Days to expiry",
        "Dongle status",
        "Dongle validity per site",
    } <= set(panels)
    state = panels["License state"]
    options = state["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {v["text"]: v["color"] for v in options.values()} == {
        "licensed": "green",
        "grace": "orange",
        "unlicensed": "red",
    }
    assert panels["Grace remaining"]["fieldConfig"]["defaults"]["unit"] == "dtdurations"
    expiry = panels["Days to expiry"]
    assert "- time()) / 86400" in expiry["targets"][0]["expr"]
    assert expiry["fieldConfig"]["defaults"]["thresholds"]["steps"] == [
        {"color": "red", "value": None},
        {"color": "orange", "value": 7},
        {"color": "green", "value": 30},
    ]
    assert panels["Dongle status"]["targets"][0]["format"] == "table"
    # System-level series carry the leader's site: their queries aggregate it away and
    # ignore $site; per-dongle ones follow $site.
    for title in ("License state", "Grace remaining", "Sites with a valid dongle"):
        expr = panels[title]["targets"][0]["expr"]
        assert "$site" not in expr and re.search(r"\b(max|min|sum)\b", expr), (title, expr)
    for title in ("Days to expiry", "Dongle status", "Dongle validity per site"):
        assert 'site=~"$site"' in panels[title]["targets"][0]["expr"], title
    for panel in panels.values():
        for target in panel.get("targets", []):
            assert 'component="controller"' in target["expr"], panel["title"]


# -- the helpers ---------------------------------------------------------------------------


HELPER_MODULES = ("panels", "board", "sources")


@pytest.fixture
def panels() -> Iterator[ModuleType]:
    sys.path.insert(0, str(DASHBOARDS))
    for name in HELPER_MODULES:
        sys.modules.pop(name, None)
    try:
        yield importlib.import_module("panels")
    finally:
        sys.path.remove(str(DASHBOARDS))
        for name in HELPER_MODULES:
            sys.modules.pop(name, None)


def test_a_panel_without_a_description_is_refused(panels: ModuleType) -> None:
    target = panels.prom("bfm_site_up")
    for make in (panels.stat, panels.timeseries, panels.table):
        with pytest.raises(ValueError, match="'Up' has no description"):
            make("Up", description="  ", targets=[target])
    with pytest.raises(ValueError, match="no description"):
        panels.state_timeline("Up", description="", targets=[target], mappings=[])
    with pytest.raises(ValueError, match="at least one query"):
        panels.stat("Up", description="Sites up.", targets=[])


def test_layout_places_rows_and_refuses_a_row_too_wide(panels: ModuleType) -> None:
    def one(title: str) -> Any:
        return panels.stat(title, description="d", targets=[panels.prom("bfm_site_up")])

    placed = panels.layout(
        panels.row(4, (one("a"), 12), (one("b"), 12)),
        panels.section("S", description="d"),
        panels.row(6, (one("c"), 24)),
    )
    grid = [(p.id, p.gridPos.x, p.gridPos.y, p.gridPos.w, p.gridPos.h) for p in placed]
    assert grid == [(1, 0, 0, 12, 4), (2, 12, 0, 12, 4), (3, 0, 4, 24, 1), (4, 0, 5, 24, 6)]
    with pytest.raises(ValueError, match="25 wide"):
        panels.row(4, (one("a"), 13), (one("b"), 12))


def test_uids_thresholds_and_variables(panels: ModuleType) -> None:
    assert panels.dashboard_uid("components-red") == "bfm-components-red"
    for bad in ("License", "a_b", "x" * 40, "", "-x"):
        with pytest.raises(ValueError, match="lowercase"):
            panels.dashboard_uid(bad)
    with pytest.raises(ValueError, match="must increase"):
        panels.steps("red", (30, "green"), (7, "orange"))
    loki = panels.loki_datasource().to_json_data()
    assert (loki["name"], loki["type"], loki["query"]) == ("DS_LOKI", "datasource", "loki")
    component = panels.component_variable().to_json_data()
    assert component["query"] == 'label_values(bfm_component_up{site=~"$site"}, component)'
    assert component["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    assert (component["includeAll"], component["multi"], component["allValue"]) == (
        True,
        True,
        ".*",
    )


def test_queries_say_what_their_datasource_needs(panels: ModuleType) -> None:
    plain = panels.prom("bfm_site_up").to_json_data()
    assert "exemplar" not in plain  # the License dashboard's JSON is unchanged
    assert panels.prom("x_bucket", exemplar=True).to_json_data()["exemplar"] is True
    logs = panels.loki('{site="a"}').to_json_data()
    assert (logs["datasource"], logs["queryType"]) == (panels.LOKI, "range")
    trace = panels.trace_by_id("trace_id").to_json_data()
    assert (trace["datasource"], trace["query"]) == (panels.TRACES, "$trace_id")
    counted = panels.increase_with_new("c_total", "5m")
    assert counted == (
        "(max_over_time(c_total[5m]) unless c_total offset 5m) or increase(c_total[5m])"
    )


def test_a_panel_of_two_datasources_is_refused(panels: ModuleType) -> None:
    targets = [panels.prom("bfm_site_up"), panels.loki('{site="a"}')]
    with pytest.raises(ValueError, match="'Mixed' mixes datasources"):
        panels.timeseries("Mixed", description="d", targets=targets)
    log_panel = panels.logs("Lines", description="d", targets=[panels.loki('{site="a"}')])
    assert log_panel.to_json_data()["datasource"] == panels.LOKI


def test_loki_and_text_variables(panels: ModuleType) -> None:
    level = panels.loki_variable("level", "Level", '{site=~"$site"}').to_json_data()
    assert level["query"] == 'label_values({site=~"$site"}, level)'
    assert (level["datasource"], level["allValue"]) == (panels.LOKI, ".+")
    site = panels.loki_variable("site", "Site").to_json_data()
    assert site["query"] == "label_values(site)"
    box = panels.textbox_variable("trace_id", "Trace id").to_json_data()
    assert (box["type"], box["query"], box["datasource"]) == ("textbox", "", None)
    traces = panels.trace_datasource().to_json_data()
    assert (traces["name"], traces["type"], traces["query"]) == ("DS_TRACES", "datasource", "tempo")


def test_merged_tables_links_and_annotations(panels: ModuleType) -> None:
    def query(expr: str) -> Any:
        return panels.prom(expr, table=True)

    merged = panels.table(
        "Processes",
        description="d",
        targets=[query("a"), query("b")],
        rename={"Value #A": "CPU"},
        gauges={"CPU": panels.Gauge("percentunit", panels.steps("green", (0.9, "red")), 1)},
        sort_by="CPU",
        descending=True,
    ).to_json_data()
    assert [t["id"] for t in merged["transformations"]] == ["merge", "organize"]
    assert merged["transformations"][1]["options"]["renameByName"] == {"Value #A": "CPU"}
    assert [s.to_json_data() for s in merged["options"]["sortBy"]] == [
        {"displayName": "CPU", "desc": True}
    ]
    one = panels.table("One", description="d", targets=[query("a")]).to_json_data()
    assert [t["id"] for t in one["transformations"]] == ["organize"]
    linked = panels.link_to(one_stat(panels), "controller", "Controller")
    assert linked.links == [
        {
            "title": "Controller",
            "url": "/d/bfm-controller?${__url_time_range}&${site:queryparam}",
        }
    ]
    names = [a["name"] for a in panels.decision_annotations()]
    assert names == ["Failovers", "Planned moves", "Sites down"]


def one_stat(panels: ModuleType) -> Any:
    return panels.stat("S", description="d", targets=[panels.prom("bfm_site_up")])


# -- the builder -----------------------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_a_dashboard_that_fails_names_its_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.dashboard.py", "x = 1\ny = undefined_name\n")
    with pytest.raises(builder.DashboardError, match=rf"{re.escape(str(path))}:2: .*NameError"):
        builder.build_all(tmp_path)


def test_a_helper_that_refuses_names_the_dashboard_line(tmp_path: Path) -> None:
    write(
        tmp_path, "helpers.py", "def check(ok):\n    if not ok:\n        raise ValueError('no')\n"
    )
    path = write(tmp_path, "x.dashboard.py", "import helpers\n\nhelpers.check(False)\n")
    with pytest.raises(
        builder.DashboardError, match=rf"{re.escape(str(path))}:3: .*ValueError: no"
    ):
        builder.build_all(tmp_path)


def test_a_syntax_error_names_its_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.dashboard.py", "dashboard = (\n")
    with pytest.raises(builder.DashboardError, match=re.escape(str(path))):
        builder.build_all(tmp_path)


def test_a_file_without_dashboard_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.dashboard.py", "board = None\n")
    with pytest.raises(builder.DashboardError, match=rf"{re.escape(str(path))} defines no"):
        builder.build_all(tmp_path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("dashboard = 42\n", "not a grafanalib Dashboard"),
        (GOOD_DASHBOARD.format(uid=""), "stable one"),
        (GOOD_DASHBOARD.format(uid="Has Spaces"), "stable one"),
    ],
)
def test_unusable_dashboards_are_refused(tmp_path: Path, text: str, says: str) -> None:
    write(tmp_path, "odd.dashboard.py", text)
    with pytest.raises(builder.DashboardError, match=says):
        builder.build_all(tmp_path)


def test_two_dashboards_with_one_uid_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "one.dashboard.py", GOOD_DASHBOARD.format(uid="bfm-x"))
    write(tmp_path, "two.dashboard.py", GOOD_DASHBOARD.format(uid="bfm-x"))
    with pytest.raises(builder.DashboardError, match="both have the uid 'bfm-x'"):
        builder.build_all(tmp_path)


def test_sibling_helpers_of_one_folder_do_not_leak_into_the_next(tmp_path: Path) -> None:
    write(tmp_path, "panels.py", "UID = 'bfm-other'\n")
    write(
        tmp_path,
        "other.dashboard.py",
        "import panels\n" + GOOD_DASHBOARD.format(uid="{}").replace('"{}"', "panels.UID"),
    )
    assert [item.uid for item in builder.build_all(tmp_path)] == ["bfm-other"]
    assert not set(HELPER_MODULES) & set(sys.modules)
    assert "bfm-license" in [item.uid for item in builder.build_all(DASHBOARDS)]


# -- the command -------------------------------------------------------------------------------


def test_build_writes_json_and_configmaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run(["dashboards", "build", "--out", str(out), "--configmaps"]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.glob("*.json")} == {f"{uid}.json" for uid in UIDS}
    for item in builder.build_all(DASHBOARDS):
        json_file = out / f"{item.uid}.json"
        assert json.loads(json_file.read_text()) == item.model
        assert str(json_file) in printed
        configmap = yaml.safe_load((out / "configmaps" / f"{item.uid}.yaml").read_text())
        assert configmap["kind"] == "ConfigMap" and configmap["apiVersion"] == "v1"
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert re.fullmatch(r"[a-z0-9-]{1,253}", configmap["metadata"]["name"])
        assert json.loads(configmap["data"][f"{item.uid}.json"]) == item.model


def test_build_without_configmaps_writes_json_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(["dashboards", "build", "--out", str(out), "--src", str(DASHBOARDS)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{item.uid}.json" for item in builder.build_all(DASHBOARDS)
    )


@pytest.mark.parametrize(
    ("make_src", "says"),
    [
        (lambda tmp: tmp / "missing", "no dashboards folder at"),
        (lambda tmp: tmp, "holds no *.dashboard.py files"),
        (
            lambda tmp: (
                write(tmp / "bad", "bad.dashboard.py", "raise RuntimeError('boom')\n").parent
            ),
            "bad.dashboard.py:1: the dashboard failed to load: RuntimeError: boom",
        ),
    ],
    ids=["missing", "empty", "broken"],
)
def test_bad_src_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_src: Any, says: str
) -> None:
    out = tmp_path / "out"
    assert run(["dashboards", "build", "--out", str(out), "--src", str(make_src(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bfm: ") and says in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_an_out_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write(tmp_path, "taken", "not a folder\n")
    assert run(["dashboards", "build", "--out", str(out)]) == 2
    assert "is --out a writable folder?" in capsys.readouterr().err
