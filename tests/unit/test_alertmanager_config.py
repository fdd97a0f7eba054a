"""The Alertmanager configuration (alerts/alertmanager.yml), its routing tests
(alerts/routes_test.yaml), the shipped scrape config (collectors/prometheus.yml) and
`bfm alerts test`: amtool accepts the config, every route and the fallback have a routing
case and every case resolves to its receivers, a routing mistake fails the cases, every
alert of alerts/rules reaches a receiver of its severity, the inhibitions name alerts
that exist and mute what docs/alerting.md says, the shipped URLs are placeholders, and
the concrete configs the alert stack writes keep the shipped routing and intervals.

amtool and promtool run for real (Debian prometheus-alertmanager and prometheus); the
inhibitions at work, in a real Alertmanager, are tests/e2e/test_alerts_demo.py's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from failover.chaos import alerting
from failover.cli import alerts as cli_alerts
from failover.cli.main import run

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
CONFIG = ALERTS / "alertmanager.yml"
ROUTES_TEST = ALERTS / "routes_test.yaml"
SCRAPE_CONFIG = ROOT / "collectors" / "prometheus.yml"
RULE_FILES = sorted((ALERTS / "rules").glob("*.yaml"))
COMPONENT_ALERTS = "BfmComponent.*|BfmTelemetryMissing"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} not on PATH; as root: DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"{package} (.ci/system-packages installs it in CI)"
        )
    return path


def _amtool() -> str:
    return _tool("amtool", "prometheus-alertmanager")


def _promtool() -> str:
    return _tool("promtool", "prometheus")


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path}: not a YAML mapping"
    return doc


def _routes(route: dict[str, Any]) -> list[dict[str, Any]]:
    """The route and every route below it, depth first."""
    return [route, *(r for child in route.get("routes", []) for r in _routes(child))]


def _matchers(strings: list[str]) -> dict[str, tuple[str, str]]:
    """``['a="x"', 'b=~"y"']`` -> ``{"a": ("=", "x"), "b": ("=~", "y")}``."""
    parsed = {}
    for text in strings:
        match = re.fullmatch(r'(\w+)\s*(=~|!~|!=|=)\s*"(.*)"', text)
        assert match, f'matcher {text!r} is not name<op>"value"'
        parsed[match[1]] = (match[2], match[3])
    return parsed


def _alert_rules() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def _resolve(amtool: str, config: Path, labels: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={config}",
            *cli_alerts.route_labels(labels),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().split(",")


# -- the configuration -----------------------------------------------------------------------


def test_amtool_accepts_the_config() -> None:
    result = cli_alerts.check_config_suite(_amtool(), ALERTS)
    assert result.ok, f"{result.summary}\n{result.detail}"


def test_every_routing_case_resolves_to_its_receivers() -> None:
    result = cli_alerts.route_tests_suite(_amtool(), ALERTS)
    assert result.ok, f"{result.summary}\n{result.detail}"
    assert result.summary == f"{len(_load(ROUTES_TEST)['cases'])} cases passed"


def test_every_route_and_the_fallback_have_a_case() -> None:
    config, cases = cli_alerts.load_route_cases(ROUTES_TEST)
    assert config == CONFIG
    root = _load(CONFIG)["route"]
    routed = {route["receiver"] for route in _routes(root)}
    expected = {receiver for case in cases for receiver in case.receivers}
    assert routed <= expected, f"routes without a case: {sorted(routed - expected)}"
    severities = {case.labels.get("severity") for case in cases}
    assert {"critical", "warning", "info", None} <= severities
    unknown = [
        case
        for case in cases
        if case.labels.get("severity") not in {"critical", "warning", "info"}
        and case.labels["alertname"] != "BfmWatchdog"
    ]
    assert unknown, "no case with an unknown or missing severity"
    assert {case.receivers for case in unknown} == {(root["receiver"],)}


@pytest.mark.parametrize(
    ("what", "pattern", "replacement"),
    [
        ("critical sent to the ticket queue", r"receiver: bfm-page\b", "receiver: bfm-ticket"),
        (
            "the watchdog route left out",
            r"(?s)    - matchers: \['alertname=\"BfmWatchdog\"'\].*?(?=    - matchers)",
            "",
        ),
        ("info routed to the fallback", r"receiver: \"null\"", "receiver: bfm-default"),
        ("the fallback dropped into null", r"receiver: bfm-default", 'receiver: "null"'),
    ],
)
def test_a_routing_mistake_fails_the_cases(
    tmp_path: Path, what: str, pattern: str, replacement: str
) -> None:
    amtool = _amtool()
    broken, n = re.subn(pattern, replacement, CONFIG.read_text(), count=1)
    assert n == 1, f"{what}: {pattern!r} no longer matches alertmanager.yml; update this test"
    (tmp_path / "alertmanager.yml").write_text(broken)
    assert cli_alerts.check_config_suite(amtool, tmp_path).ok, f"{what}: not a valid config"
    shutil.copy(ROUTES_TEST, tmp_path / "routes_test.yaml")
    result = cli_alerts.route_tests_suite(amtool, tmp_path)
    assert not result.ok, f"{what}: the routing cases still pass"
    assert "should reach" in result.detail


def test_every_alert_reaches_the_receiver_of_its_severity() -> None:
    """No rule's alert falls through to the fallback: each severity the rules use has a
    route, and the watchdog goes to the dead man's switch."""
    amtool = _amtool()
    by_severity = {"critical": ["bfm-page"], "warning": ["bfm-ticket"], "info": ["null"]}
    rules = _alert_rules()
    assert "BfmSiteDown" in rules and "BfmWatchdog" in rules, sorted(rules)
    for name, rule in rules.items():
        labels = {"alertname": name, **rule.get("labels", {}), "site": "a"}
        expected = ["bfm-watchdog"] if name == "BfmWatchdog" else by_severity[labels["severity"]]
        assert _resolve(amtool, CONFIG, labels) == expected, name


def test_grouping_and_timings() -> None:
    root = _load(CONFIG)["route"]
    assert root["group_by"] == ["alertname", "site"]
    critical = next(r for r in root["routes"] if 'severity="critical"' in r.get("matchers", []))
    assert critical["group_wait"] in {"0s", "1s"}, "a site-down page must leave at once"
    assert critical["group_interval"] == "10s", "resolves and changes follow within 10 s"


def test_inhibitions_mute_what_they_should() -> None:
    """Critical mutes warning of the same site (a source with a site: system-level alerts
    have none), and BfmSiteDown mutes its site's component and telemetry alerts; the names
    they match are alerts the rules define."""
    rules = _load(CONFIG)["inhibit_rules"]
    by_severity = [
        r for r in rules if _matchers(r["source_matchers"]).get("severity") == ("=", "critical")
    ]
    assert len(by_severity) == 1
    (rule,) = by_severity
    assert _matchers(rule["target_matchers"]) == {"severity": ("=", "warning")}
    assert _matchers(rule["source_matchers"])["site"] == ("=~", ".+")
    assert rule["equal"] == ["site"]

    site_down = [r for r in rules if _matchers(r["source_matchers"]).get("alertname")]
    assert len(site_down) == 1
    (rule,) = site_down
    assert _matchers(rule["source_matchers"]) == {"alertname": ("=", "BfmSiteDown")}
    op, pattern = _matchers(rule["target_matchers"])["alertname"]
    assert (op, pattern) == ("=~", COMPONENT_ALERTS)
    assert rule["equal"] == ["site"]
    names = set(_alert_rules())
    muted = {name for name in names if re.fullmatch(pattern, name)}
    assert "BfmSiteDown" in names
    assert {"BfmComponentDown", "BfmTelemetryMissing"} <= muted
    assert "BfmSiteDown" not in muted and "BfmWatchdog" not in muted


def test_receivers_are_placeholders_and_the_email_example_is_on_no_route() -> None:
    doc = _load(CONFIG)
    receivers = {r["name"]: r for r in doc["receivers"]}
    routed = {route["receiver"] for route in _routes(doc["route"])}
    assert set(receivers) - routed == {"bfm-email"}
    for receiver in receivers.values():
        for hook in receiver.get("webhook_configs", []):
            assert re.fullmatch(r"http://[a-z-]+\.example\.invalid/\S+", hook["url"]), hook
    (email,) = receivers["bfm-email"]["email_configs"]
    assert email["smarthost"].split(":")[0].endswith(".invalid")
    assert receivers["null"].keys() == {"name"}
    assert receivers["bfm-watchdog"]["webhook_configs"][0]["send_resolved"] is False
    assert all(
        hook["send_resolved"] is True
        for name in ("bfm-page", "bfm-ticket", "bfm-default")
        for hook in receivers[name]["webhook_configs"]
    )


# -- the routing test file -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("cases: []\n", "non-empty list 'cases'"),
        ("- just a list\n", "non-empty list 'cases'"),
        ("cases:\n  - labels: {a: b}\n", "case 1 needs"),
        ("cases:\n  - labels: {a: b}\n    receivers: []\n", "case 1 names no receiver"),
        ("cases: [\n", "cannot read"),
    ],
)
def test_a_malformed_routes_file_is_named(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "routes_test.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(complaint)) as caught:
        cli_alerts.load_route_cases(path)
    assert str(path) in str(caught.value)


def test_route_labels_are_quoted_matchers() -> None:
    assert cli_alerts.route_labels({"a": 'x "y"\\'}) == ['a="x \\"y\\"\\\\"']


# -- bfm alerts test -------------------------------------------------------------------------


def test_bfm_alerts_test_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    _amtool(), _promtool()
    assert run(["alerts", "test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 4, lines
    assert "amtool routes test" in lines[3]


def test_bfm_alerts_test_fails_with_exit_1_and_names_the_suite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _amtool(), _promtool()
    copy = tmp_path / "alerts"
    shutil.copytree(ALERTS, copy)
    routes = copy / "routes_test.yaml"
    routes.write_text(
        routes.read_text().replace("receivers: [bfm-ticket]", "receivers: [bfm-page]")
    )
    assert run(["alerts", "test", f"--alerts-dir={copy}", "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False
    assert [s["ok"] for s in report["suites"]] == [True, True, True, False]
    assert "should reach bfm-page, reached bfm-ticket" in report["suites"][3]["detail"]
    assert captured.err.strip() == "bfm: 1 alert suite of 4 failed: amtool routes test"


def test_bfm_alerts_test_without_the_tools_exits_2_with_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither promtool nor amtool
    assert run(["alerts", "test"]) == 2
    err = capsys.readouterr().err
    assert "bfm: amtool and promtool are not installed; as root:" in err
    assert "apt-get install -y prometheus-alertmanager prometheus\n" in err


def test_bfm_alerts_test_on_a_folder_without_rules_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["alerts", "test", f"--alerts-dir={tmp_path}"]) == 2
    assert "has no rules/ folder" in capsys.readouterr().err


# -- the shipped scrape config and the concrete copies the alert stack writes ---------------


def test_the_shipped_scrape_config() -> None:
    """1 s scrape and evaluation (the shipped default), the bfm job over the run's file_sd
    targets keeping the processes' own labels, the node exporter, the rules, Alertmanager."""
    doc = _load(SCRAPE_CONFIG)
    assert doc["global"]["scrape_interval"] == "1s"
    assert doc["global"]["evaluation_interval"] == "1s"
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(jobs) == {"bfm", "node", "otel-gateway", "otel-collector"}
    assert jobs["bfm"]["honor_labels"] is True
    assert jobs["bfm"]["file_sd_configs"][0]["files"] == ["targets/*.json"]
    assert jobs["node"]["static_configs"][0]["targets"] == ["127.0.0.1:9100"]
    assert doc["rule_files"] == ["../alerts/rules/*.yaml"]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


def test_promtool_accepts_the_concrete_scrape_config_and_its_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    run_dir = tmp_path / "run"
    out = alerting.write_prometheus_config(
        run_dir,
        run_dir / "alerting" / "prometheus.yml",
        alertmanager="127.0.0.1:19093",
        node_exporter="127.0.0.1:19100",
    )
    doc = _load(out)
    shipped = _load(SCRAPE_CONFIG)
    assert doc["global"] == shipped["global"]
    assert doc["rule_files"] == [str(ALERTS / "rules" / "*.yaml")]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert jobs["bfm"]["file_sd_configs"][0]["files"] == [str(run_dir / "targets" / "*.json")]
    assert jobs["bfm"]["honor_labels"] is True
    assert jobs["node"]["static_configs"] == [{"targets": ["127.0.0.1:19100"]}]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:19093"
    ]
    (run_dir / "targets").mkdir()
    done = subprocess.run(
        [promtool, "check", "config", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout + done.stderr


def test_the_concrete_alertmanager_config_only_moves_the_webhooks(tmp_path: Path) -> None:
    amtool = _amtool()
    out = alerting.write_alertmanager_config(tmp_path / "am.yml", "http://127.0.0.1:5001")
    written, shipped = _load(out), _load(CONFIG)
    for receiver in written["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook.pop("url") == f"http://127.0.0.1:5001/{receiver['name']}"
    for receiver in shipped["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            del hook["url"]
    assert written == shipped
    done = subprocess.run(
        [amtool, "check-config", str(out)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for case in cli_alerts.load_route_cases(ROUTES_TEST)[1]:
        assert tuple(_resolve(amtool, out, case.labels)) == case.receivers, case.name
