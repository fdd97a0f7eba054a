"""The dashboards in dashboards/ (docs/dashboards.md): each renders, and its JSON keeps
Grafana's model rules and BFM's conventions: unique panel ids, panels inside the
24-column grid and never overlapping, a description on every panel, every datasource and
$variable defined, a stable uid, a modern schemaVersion, and only metrics from
docs/metrics.md. The shared helpers refuse what would break those rules; the builder
names the file at fault; `bfm dashboards build` writes the files and refuses bad input
with exit 2."""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from failover import dashboards_build as builder
from failover.cli.main import run

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
METRICS_DOC = REPO / "docs" / "metrics.md"
SOURCES = sorted(DASHBOARDS.glob("*.dashboard.py"))
GRID_WIDTH = 24
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
VARIABLE_USE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")
METRIC = re.compile(r"\bbfm_[a-z_]+")

GOOD_DASHBOARD = """
from grafanalib import core as G
dashboard = G.Dashboard(title="T", uid="{uid}", panels=[])
"""


# -- every dashboard -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=SOURCES, ids=[p.name for p in SOURCES])
def built(request: pytest.FixtureRequest) -> builder.BuiltDashboard:
    return builder.build(request.param)


def all_panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in model.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, text) of every query: panel targets and query variables."""
    found = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in all_panels(model)
        for target in panel.get("targets", [])
    ]
    found += [
        (f"variable ${var['name']}", var["query"])
        for var in model["templating"]["list"]
        if var["type"] == "query"
    ]
    return found


def test_the_license_dashboard_is_there() -> None:
    assert DASHBOARDS / "license.dashboard.py" in SOURCES
    uids = [item.uid for item in builder.build_all(DASHBOARDS)]
    assert "bfm-license" in uids
    assert len(uids) == len(SOURCES)


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
        if v["type"] != "datasource"
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


def test_every_variable_a_query_uses_is_defined(built: builder.BuiltDashboard) -> None:
    defined = {var["name"] for var in built.model["templating"]["list"]} | BUILTIN_VARIABLES
    for where, text in queries(built.model):
        used = {next(g for g in m.groups() if g) for m in VARIABLE_USE.finditer(text)}
        assert used <= defined, f"{where} uses undefined {sorted(used - defined)}: {text}"


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


def test_every_metric_is_in_the_catalogue(built: builder.BuiltDashboard) -> None:
    documented = set(re.findall(r"`(bfm_[a-z_]+)`", METRICS_DOC.read_text()))
    seen = set()
    for where, text in queries(built.model):
        for name in METRIC.findall(text):
            seen.add(name)
            assert name in documented, f"{where}: {name} is not in docs/metrics.md"
    assert seen, "the dashboard queries no bfm_ metric"


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


@pytest.fixture
def panels() -> Iterator[ModuleType]:
    sys.path.insert(0, str(DASHBOARDS))
    sys.modules.pop("panels", None)
    try:
        yield importlib.import_module("panels")
    finally:
        sys.path.remove(str(DASHBOARDS))
        sys.modules.pop("panels", None)


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
    assert "panels" not in sys.modules
    assert "bfm-license" in [item.uid for item in builder.build_all(DASHBOARDS)]


# -- the command -------------------------------------------------------------------------------


def test_build_writes_json_and_configmaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run(["dashboards", "build", "--out", str(out), "--configmaps"]) == 0
    printed = capsys.readouterr().out
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
