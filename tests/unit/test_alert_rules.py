"""The alerts in alerts/ (ARCHITECTURE.md section 5; conventions in alerts/README.md):
promtool accepts the rules and passes their unit tests, every alert follows the naming,
label and annotation conventions, uses only catalogued metrics, and is tested both ways,
every recording rule is named by convention and tested, the alerts other parts rely on
(BfmSiteDown, the component alerts it mutes) keep their contract, and the must-not-fire
cases bite: a rule loosened on a copy fails them."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import failover.telemetry  # noqa: F401 - importing it registers the metric catalogue

ROOT = Path(__file__).parents[2]
ALERTS = ROOT / "alerts"
RULE_FILES = sorted((ALERTS / "rules").glob("*.yaml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.yaml"))
METRICS_DOC = ROOT / "docs" / "metrics.md"

SEVERITIES = {"critical", "warning"}
WATCHDOG = "BfmWatchdog"  # the one alert with severity info
ANNOTATIONS = {"summary", "description", "runbook_url"}
METRIC_NAME = re.compile(r"(?<![a-z0-9_:])bfm_[a-z_]+")
RECORDED_NAME = re.compile(r"bfm:[a-z0-9_:]+")
RECORD_CONVENTION = re.compile(r"bfm:[a-z_]+:[a-z0-9_]+:[a-z0-9_]+")  # bfm:level:metric:ops
NODE_METRIC = re.compile(r"(?<![a-z0-9_:])node_[A-Za-z0-9_]+")
UP = re.compile(r"\bup\{")
# The node exporter's metrics the rules read (its cpu, meminfo, filesystem and filefd
# collectors, all on by default in Debian's prometheus-node-exporter).
NODE_EXPORTER_METRICS = {
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_readonly",
    "node_filefd_allocated",
    "node_filefd_maximum",
}
# Alertmanager mutes these with BfmSiteDown (alerts/alertmanager.yml, equal: [site]).
MUTED_BY_SITE_DOWN = re.compile(r"BfmComponent.*|BfmTelemetryMissing")
# Muted alerts a site's crash cannot set off, so they need not wait for BfmSiteDown: the
# metrics each may read. The supervisor's restart counter lives in the site process (it
# dies with the site; a restarted site process starts its components without counting).
NOT_SET_OFF_BY_SITE_CRASH = {"BfmComponentRestarted": {"bfm_component_restarts_total"}}
DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
DURATION_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
EXPANDING = re.compile(r"(?P<start>.+?)(?:(?P<sign>[+-])(?P<step>[^+-]+))?x(?P<times>\d+)")


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool not on PATH; as root: apt-get install -y prometheus "
            "(Debian package; .ci/system-packages installs it in CI)"
        )
    return promtool


def _run(promtool: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _parse(path: Path) -> dict[str, Any]:
    doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert isinstance(doc, dict), f"{path}: not a YAML mapping"
    return doc


@functools.cache
def _load(path: Path) -> dict[str, Any]:
    """A file's YAML, parsed once (read-only: ``_parse`` gives a copy to change)."""
    return _parse(path)


def _rules(rule_file: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(rule_file)["groups"] for rule in group["rules"]]


def _alerts(rule_file: Path) -> list[dict[str, Any]]:
    return [rule for rule in _rules(rule_file) if "alert" in rule]


@functools.cache
def _named(kind: str) -> dict[str, dict[str, Any]]:
    """Every alert (``kind="alert"``) or recording rule (``"record"``) by name."""
    found: dict[str, dict[str, Any]] = {}
    for rule_file in RULE_FILES:
        for rule in _rules(rule_file):
            if kind in rule:
                assert rule[kind] not in found, f"{rule[kind]} is defined twice"
                found[rule[kind]] = {**rule, "file": rule_file}
    return found


def _all_alerts() -> dict[str, dict[str, Any]]:
    return _named("alert")


def _all_records() -> dict[str, dict[str, Any]]:
    return _named("record")


def _seconds(duration: str) -> float:
    parts = DURATION_PART.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(int(n) * DURATION_S[u] for n, u in parts)


def _samples(values: str) -> list[float | None]:
    """promtool's series notation, expanded: a float per step, None for ``_`` and ``stale``
    (no sample a rule could see)."""
    out: list[float | None] = []
    for token in values.split():
        if token in {"_", "stale"}:
            out.append(None)
        elif re.fullmatch(r"_x\d+", token):
            out.extend([None] * int(token[2:]))
        elif match := EXPANDING.fullmatch(token):
            start, times = float(match["start"]), int(match["times"])
            step = float(match["step"] or 0) * (-1 if match["sign"] == "-" else 1)
            out.extend(start + i * step for i in range(times + 1))
        else:
            out.append(float(token))
    return out


@dataclass(frozen=True)
class Case:
    """One ``alert_rule_test`` entry with the series of its test group."""

    test_file: Path
    group: str
    alertname: str
    eval_s: float
    fires: bool
    series_at_eval: frozenset[str]  # metric names with a sample at the eval step
    labels: tuple[frozenset[str], ...] = ()  # the label names of each expected alert


def _cases(test_files: tuple[Path, ...] = tuple(TEST_FILES)) -> list[Case]:
    return list(_cases_of(test_files))


@functools.cache
def _cases_of(test_files: tuple[Path, ...]) -> tuple[Case, ...]:
    cases: list[Case] = []
    for test_file in test_files:
        doc = _load(test_file)
        default_interval = str(doc.get("evaluation_interval", "1m"))
        for group in doc["tests"]:
            interval_s = _seconds(str(group.get("interval", default_interval)))
            series = [
                (s["series"].split("{")[0], _samples(s["values"]))
                for s in group.get("input_series") or []
            ]
            for test in group.get("alert_rule_test", []):
                eval_s = _seconds(str(test["eval_time"]))
                step = int(eval_s // interval_s)
                present = {
                    name
                    for name, samples in series
                    if step < len(samples) and samples[step] is not None
                }
                expected = test.get("exp_alerts") or []
                cases.append(
                    Case(
                        test_file=test_file,
                        group=group.get("name", "?"),
                        alertname=test["alertname"],
                        eval_s=eval_s,
                        fires=bool(expected),
                        series_at_eval=frozenset(present),
                        labels=tuple(frozenset(e.get("exp_labels") or {}) for e in expected),
                    )
                )
    return tuple(cases)


def _metric_names(rule: dict[str, Any], records: dict[str, dict[str, Any]]) -> set[str]:
    """The metrics a rule reads, in its expression and its annotations: bfm_ metrics, the
    node exporter's, `up`, and those behind each recording rule it reads."""
    text = rule["expr"] + " ".join(rule.get("annotations", {}).values())
    names = set(METRIC_NAME.findall(text)) | set(NODE_METRIC.findall(text))
    if UP.search(rule["expr"]):
        names.add("up")
    for recorded in RECORDED_NAME.findall(text):
        if recorded in records:
            names |= _metric_names(records[recorded], records)
    return names


@functools.cache
def _readers(name: str) -> frozenset[str]:
    """The rules that read ``name``, directly or through recordings."""
    rules = {**_all_alerts(), **_all_records()}
    found: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for other, rule in rules.items():
            mentions = re.search(rf"{re.escape(current)}(?![a-z0-9_:])", rule["expr"])
            if other not in found and mentions:
                found.add(other)
                todo.append(other)
    return frozenset(found)


def test_there_are_rules_and_tests() -> None:
    assert RULE_FILES, "no alerts/rules/*.yaml"
    assert TEST_FILES, "no alerts/tests/*.yaml"
    tested = {
        (test_file.parent / rule_file).resolve()
        for test_file in TEST_FILES
        for rule_file in _load(test_file)["rule_files"]
    }
    untested = [str(f.relative_to(ROOT)) for f in RULE_FILES if f.resolve() not in tested]
    assert not untested, f"rule files no alerts/tests/*.yaml loads: {untested}"


def test_promtool_accepts_the_rules() -> None:
    done = _run(_promtool(), "check", "rules", *(f.relative_to(ROOT) for f in RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = _run(_promtool(), "test", "rules", *(f.relative_to(ROOT) for f in TEST_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(_all_alerts()))
def test_alert_follows_the_conventions(name: str) -> None:
    rule = _all_alerts()[name]
    assert re.fullmatch(r"Bfm[A-Z][A-Za-z0-9]*", name), f"{name}: Bfm + CamelCase"
    labels = rule.get("labels", {})
    severities = {"info"} if name == WATCHDOG else SEVERITIES
    assert labels.get("severity") in severities, f"{name}: severity must be one of {severities}"
    # site comes from the expression (the dongle's), never a fixed label on the rule
    assert set(labels) == {"severity"}, f"{name}: rule labels {sorted(labels)}"
    annotations = rule.get("annotations", {})
    missing = ANNOTATIONS - set(annotations)
    assert not missing, f"{name}: missing annotations {sorted(missing)}"
    assert all(str(annotations[a]).strip() for a in ANNOTATIONS), f"{name}: empty annotation"
    assert annotations["runbook_url"] == f"alerts/runbooks/{name}.md", name
    assert (ROOT / annotations["runbook_url"]).is_file(), f"{name}: no runbook"
    assert "for" in rule and _seconds(str(rule["for"])) > 0, f"{name}: needs a `for:`"


def _catalogue() -> set[str]:
    return (
        set(REGISTRY._names_to_collectors)  # the registered series names
        | set(re.findall(r"`(bfm_[a-z_]+)`", METRICS_DOC.read_text()))
        | NODE_EXPORTER_METRICS
        | {"up"}
    )


def test_alerts_read_only_catalogued_metrics() -> None:
    known, records = _catalogue(), _all_records()
    for name, rule in _all_alerts().items():
        text = rule["expr"] + " ".join(rule.get("annotations", {}).values())
        undefined = sorted(set(RECORDED_NAME.findall(text)) - set(records))
        assert not undefined, f"{name} reads recordings no rule records: {undefined}"
        unknown = sorted(_metric_names(rule, records) - known)
        assert not unknown, f"{name} reads metrics not in the catalogue: {unknown}"
        assert _metric_names(rule, records) or name == WATCHDOG, f"{name} reads no metric"


@pytest.mark.parametrize("name", sorted(_all_records()))
def test_recording_rule_is_named_catalogued_and_tested(name: str) -> None:
    """bfm:level:metric:operations, reading catalogued metrics, and a promql_expr_test
    that evaluates it with an expected value."""
    assert RECORD_CONVENTION.fullmatch(name), f"{name}: bfm:<level>:<metric>:<operations>"
    records = _all_records()
    rule = records[name]
    unknown = sorted(_metric_names(rule, records) - _catalogue())
    assert not unknown, f"{name} reads metrics not in the catalogue: {unknown}"
    tested = [
        test
        for test_file in TEST_FILES
        for group in _load(test_file)["tests"]
        for test in group.get("promql_expr_test", [])
        if re.search(rf"{re.escape(name)}(?![a-z0-9_:])", test["expr"]) and test.get("exp_samples")
    ]
    assert tested, f"{name}: no promql_expr_test evaluates it (with exp_samples)"


def test_tests_name_only_existing_alerts() -> None:
    """promtool passes ``exp_alerts: []`` for an alert name that no rule has."""
    unknown = sorted({c.alertname for c in _cases()} - set(_all_alerts()))
    assert not unknown, f"alerts/tests name alerts no rule defines: {unknown}"


@pytest.mark.parametrize("name", sorted(_all_alerts()))
def test_alert_is_tested_both_ways(name: str) -> None:
    cases = [c for c in _cases() if c.alertname == name]
    assert any(c.fires for c in cases), f"{name}: no test case where it fires"
    metrics = _metric_names(_all_alerts()[name], _all_records())
    silent = [c for c in cases if not c.fires]
    assert silent, f"{name}: no must-not-fire case (exp_alerts: [])"
    if not metrics:  # the watchdog: no input can make it fire, only its `for:` holds it
        return
    for case in silent:
        assert case.series_at_eval & metrics, (
            f"{name}: the must-not-fire case at {case.eval_s:g}s in {case.group!r} has no "
            f"sample of {sorted(metrics)} at that time: it would pass with the rule broken"
        )


def test_site_down_keeps_its_contract() -> None:
    """Alertmanager's inhibition and the end-to-end test rely on BfmSiteDown as it is:
    critical, per site alone (whichever replica leads), `for: 2s`."""
    rule = _all_alerts()["BfmSiteDown"]
    assert rule["labels"] == {"severity": "critical"}
    assert rule["for"] == "2s"
    assert re.fullmatch(
        r'max by \(site\) \(bfm_site_up\{component="controller"\}\) == 0', rule["expr"].strip()
    ), rule["expr"]
    firing = [c for c in _cases() if c.alertname == "BfmSiteDown" and c.fires]
    assert firing and all(labels == {"severity", "site"} for c in firing for labels in c.labels)


@pytest.mark.parametrize(
    "name", sorted(n for n in _all_alerts() if MUTED_BY_SITE_DOWN.fullmatch(n))
)
def test_alert_muted_by_site_down_carries_site_and_component(name: str) -> None:
    """Every alert BfmSiteDown mutes says which site and component it is about, and starts
    firing only after BfmSiteDown would (so that Alertmanager has the muting alert first),
    unless a site's crash cannot set it off: then it reads nothing else, and is a warning
    (the warning route's 30 s group_wait still gives BfmSiteDown time to mute it)."""
    rule = _all_alerts()[name]
    if name in NOT_SET_OFF_BY_SITE_CRASH:
        metrics = _metric_names(rule, _all_records())
        assert metrics == NOT_SET_OFF_BY_SITE_CRASH[name], f"{name} reads {sorted(metrics)}"
        assert rule["labels"]["severity"] == "warning", name
    else:
        site_down_s = _seconds(_all_alerts()["BfmSiteDown"]["for"])
        assert _seconds(rule["for"]) >= max(5, 2 * site_down_s), f"{name}: `for: {rule['for']}`"
    firing = [c for c in _cases() if c.alertname == name and c.fires]
    assert firing, name
    for case in firing:
        for labels in case.labels:
            assert {"site", "component"} <= labels, f"{name} in {case.group!r}: {labels}"


def test_the_catalogue_shows_every_rule_as_it_is() -> None:
    """docs/alerts.md names every alert with its severity and `for:` and shows its
    expression verbatim, and every recording with its expression: it cannot drift."""
    catalogue = (ROOT / "docs" / "alerts.md").read_text()
    for name, rule in _all_alerts().items():
        row = re.search(
            rf"^\| \[{name}\]\(\.\./alerts/runbooks/{name}\.md\) \| (.+)$", catalogue, re.M
        )
        assert row, f"docs/alerts.md: no row for {name}"
        severity, _, for_ = (cell.strip() for cell in row[1].split("|")[:3])
        assert (severity, for_.split(",")[0]) == (rule["labels"]["severity"], rule["for"]), name
        assert rule["expr"].strip() in catalogue, f"docs/alerts.md: {name}'s expression differs"
    for name, rule in _all_records().items():
        assert f"`{name}`" in catalogue, f"docs/alerts.md: no {name}"
        assert rule["expr"].strip() in catalogue, f"docs/alerts.md: {name}'s expression differs"


def test_the_series_check_sees_missing_samples(tmp_path: Path) -> None:
    """The must-not-fire check above reads promtool's notation right: a case after a series
    ended, in a gap or at a stale marker has no sample; one inside it has."""
    assert _samples("1+2x2 _x2 stale -1-1x1 5") == [1, 3, 5, None, None, None, -1, -2, 5]
    test_file = tmp_path / "t_test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "tests": [
                    {
                        "interval": "30s",
                        "input_series": [
                            {"series": 'bfm_a{site="a"}', "values": "1x4 stale"},
                            {"series": "bfm_b", "values": "_x2 0"},
                        ],
                        "alert_rule_test": [
                            {"eval_time": t, "alertname": "X", "exp_alerts": []}
                            for t in ("1m", "1m30s", "2m30s", "3m")
                        ],
                    }
                ],
            }
        )
    )
    present = [c.series_at_eval for c in _cases((test_file,))]
    assert present == [{"bfm_a", "bfm_b"}, {"bfm_a"}, set(), set()]


def test_recordings_are_followed_to_their_metrics_and_readers() -> None:
    """The metric check and the loosened copies below follow an alert through the
    recordings it reads."""
    records = _all_records()
    alert = _all_alerts()["BfmAlarmErrorBudgetBurnFast"]
    assert "bfm_messages_total" in _metric_names(alert, records)
    assert {"bfm:site:alarm_messages_not_acked:ratio_rate1h", "BfmAlarmErrorBudgetBurnFast"} <= (
        _readers("bfm:site:alarm_messages:increase1h")
    )


# Each changes one rule on a copy, (rule, field, regex, replacement): a shorter `for:`, a
# threshold moved past a must-not-fire case, a filter or condition dropped, an aggregation
# that keeps the replica's labels (so a leader change restarts the alert), or a recording
# that loses what it is for (the first batch of a counter). Each must fail promtool.
LOOSENED = [
    ("BfmLicenseGracePeriod", "for", r".+", "0s"),
    ("BfmLicenseGracePeriod", "expr", r'(\{state="grace"\}\)) == 1', r"\1 >= 0"),
    (
        "BfmLicenseGracePeriod",
        "expr",
        r"(?s).+",
        "min without (site) (bfm_license_grace_remaining_seconds)"
        ' and (max without (site, state) (bfm_license_state{state="grace"}) == 1)',
    ),
    ("BfmLicenseUnlicensed", "for", r".+", "0s"),
    ("BfmLicenseUnlicensed", "expr", r"== 1", ">= 0"),
    ("BfmLicenseUnlicensed", "expr", r"max\(", "max without (site) ("),
    ("BfmLicenseExpiringSoon", "for", r".+", "0s"),
    ("BfmLicenseExpiringSoon", "expr", r"< 30 \* 86400", "< 31 * 86400"),
    ("BfmLicenseExpiringSoon", "expr", r'status="valid"', 'status=~".+"'),
    ("BfmLicenseExpiringSoon", "expr", r"min by \(site\)", "min without ()"),
    ("BfmLicenseDongleInvalid", "for", r".+", "0s"),
    ("BfmLicenseDongleInvalid", "expr", r'status!="valid"', 'status=~".+"'),
    ("BfmLicenseDongleInvalid", "expr", r"max by \(site\)", "max without (status)"),
    # sites
    ("BfmSiteDown", "for", r".+", "1s"),
    ("BfmSiteDown", "expr", r"== 0", "<= 1"),
    ("BfmSiteDown", "expr", r"max by \(site\)", "max by (site, instance)"),
    ("BfmSiteDown", "keep_firing_for", r".+", "0s"),
    # components
    ("BfmComponentDown", "for", r".+", "5s"),
    ("BfmComponentDown", "expr", r"\(bfm_component_up\) == 0", "(bfm_component_up) < 2"),
    ("BfmComponentDown", "expr", r"unless on \(site, component\)\s+.+ == 1", ""),
    ("BfmComponentDown", "expr", r'component!~"bfm-site\|producer"', 'component=~".+"'),
    ("BfmComponentCrashLooping", "for", r".+", "0s"),
    ("BfmComponentCrashLooping", "expr", r">= 3", ">= 2"),
    ("BfmComponentRestarted", "for", r".+", "0s"),
    ("BfmComponentRestarted", "expr", r"> 0", ">= 0"),
    (
        "BfmComponentRestarted",
        "expr",
        r"bfm:site_component:component_restarts:increase15m",
        "sum by (site, component) (increase(bfm_component_restarts_total[15m]))",
    ),
    (
        "bfm:site_component:component_restarts:increase15m",
        "expr",
        r"(?s).+",
        "sum by (site, component) (increase(bfm_component_restarts_total[15m]))",
    ),
    # failover
    ("BfmFailoverInProgress", "for", r".+", "1s"),
    ("BfmFailoverInProgress", "expr", r"== 1", ">= 0"),
    ("BfmFailoverInProgress", "expr", r"by \(site, component\)", "by (site, component, instance)"),
    ("BfmFailoverTooLong", "for", r".+", "5s"),
    ("BfmFailoverTooLong", "expr", r"== 1", ">= 0"),
    ("BfmFailoverTooLong", "expr", r"by \(site, component\)", "by (site, component, instance)"),
    # ownership
    ("BfmStaleEpochWrites", "for", r".+", "0s"),
    ("BfmStaleEpochWrites", "expr", r"> 0", ">= 0"),
    ("BfmStaleEpochWrites", "expr", r'reason="stale-epoch"', 'reason=~".+"'),
    (
        "bfm:site_component_reason:stale_epoch_refusals:increase5m",
        "expr",
        r"(?s).+",
        "sum by (site, component, reason) (increase(bfm_stale_epoch_refusals_total[5m]))",
    ),
    ("BfmShardsUneven", "for", r".+", "9m"),
    ("BfmShardsUneven", "expr", r"> 0", ">= 0"),
    (
        "bfm:site_component:handback_pending_shards:max",
        "expr",
        r"by \(site, component\)",
        "by (site, component, instance)",
    ),
    ("BfmHandbackStuck", "for", r".+", "0s"),
    ("BfmHandbackStuck", "expr", r"\s+and on \(site, component\)\s+changes\(.+\) == 0", ""),
    # controller and store
    ("BfmControllerNoLeader", "for", r".+", "5s"),
    ("BfmControllerNoLeader", "expr", r"== 0", ">= 0"),
    ("BfmControllerNoLeader", "expr", r"max\(", "max by (site) ("),
    ("BfmLeaseRenewalSlow", "for", r".+", "1m"),
    ("BfmLeaseRenewalSlow", "expr", r"> 0\.25", "> 0.2"),
    (
        "bfm:site_component:lease_renewal_duration_seconds:p99_rate5m",
        "expr",
        r"histogram_quantile\(0\.99",
        "histogram_quantile(0.9",
    ),
    ("BfmStoreUnreachable", "for", r".+", "5s"),
    ("BfmStoreUnreachable", "expr", r"== 0", ">= 0"),
    ("BfmFailsafeActive", "for", r".+", "3s"),
    ("BfmFailsafeActive", "expr", r"== 1", ">= 0"),
    # the alarm path
    ("BfmAlarmErrorBudgetBurnFast", "for", r".+", "1m"),
    ("BfmAlarmErrorBudgetBurnFast", "expr", r"14\.4 \*", "14 *"),
    ("BfmAlarmErrorBudgetBurnFast", "expr", r"\s+and on \(site\)\s+.+ratio_rate5m.+", ""),
    ("BfmAlarmErrorBudgetBurnFast", "expr", r"ratio_rate1h", "ratio_rate5m"),
    (
        "bfm:site:alarm_messages_not_acked:ratio_rate1h",
        "expr",
        r"\(max_over_time\(.+\[1h\]\)\s+unless .+ offset 1h\)\s+or\s+",
        "",
    ),
    ("BfmAlarmErrorBudgetBurnSlow", "for", r".+", "10m"),
    ("BfmAlarmErrorBudgetBurnSlow", "expr", r"\(6 \*", "(5 *"),
    ("BfmAlarmErrorBudgetBurnSlow", "expr", r"\s+and on \(site\)\s+.+ratio_rate30m.+", ""),
    ("BfmAlarmLatencyHigh", "for", r".+", "4m"),
    ("BfmAlarmLatencyHigh", "expr", r"> 2\.5", "> 2.4"),
    ("BfmAlarmLatencyHigh", "expr", r'kind="alarm"', 'kind=~".+"'),
    ("BfmAlarmLatencyHigh", "expr", r'component="producer"', 'component=~".+"'),
    # telemetry and logs
    ("BfmTelemetryMissing", "for", r".+", "5s"),
    ("BfmTelemetryMissing", "expr", r'(component="bfm-site"\}\)) == 0', r"\1 < 2"),
    ("BfmTelemetryMissing", "expr", r"and on \(site, component\)\s+.+ == 1\s+", ""),
    ("BfmLogLinesDropped", "for", r".+", "4m"),
    ("BfmLogLinesDropped", "expr", r"> 0\.01", "> 0.005"),
    ("BfmNodeExporterDown", "for", r".+", "30s"),
    ("BfmNodeExporterDown", "expr", r"== 0", ">= 0"),
    # resources
    ("BfmNodeCpuSaturated", "for", r".+", "5m"),
    ("BfmNodeCpuSaturated", "expr", r"> 0\.9", "> 0.85"),
    ("BfmNodeMemoryLow", "for", r".+", "3m"),
    ("BfmNodeMemoryLow", "expr", r"< 0\.1", "< 0.12"),
    ("BfmNodeDiskSpaceLow", "for", r".+", "5m"),
    ("BfmNodeDiskSpaceLow", "expr", r"< 0\.15", "< 0.17"),
    ("BfmNodeDiskFull", "for", r".+", "0s"),
    ("BfmNodeDiskFull", "expr", r"< 0\.05", "< 0.13"),
    (
        "bfm:site_instance_mountpoint:node_filesystem_avail:ratio",
        "expr",
        r"\s+unless\s+node_filesystem_readonly.+== 1",
        "",
    ),
    (
        "bfm:site_instance_mountpoint:node_filesystem_avail:ratio",
        "expr",
        r',fstype!~"[^"]+"',
        "",
    ),
    ("BfmNodeFileDescriptorsHigh", "for", r".+", "3m"),
    ("BfmNodeFileDescriptorsHigh", "expr", r"> 0\.8", "> 0.78"),
    ("BfmProcessCpuHigh", "for", r".+", "5m"),
    ("BfmProcessCpuHigh", "expr", r"> 0\.9", "> 0.8"),
    ("BfmProcessMemoryHigh", "for", r".+", "10m"),
    ("BfmProcessMemoryHigh", "expr", r"> 300e6", "> 280e6"),
    ("BfmProcessFileDescriptorsHigh", "for", r".+", "3m"),
    ("BfmProcessFileDescriptorsHigh", "expr", r"> 0\.8", "> 0.75"),
    ("BfmWatchdog", "for", r".+", "0s"),
]


@pytest.mark.parametrize("name", sorted(_all_alerts()))
def test_alert_has_loosened_copies(name: str) -> None:
    """Every alert's `for:` and its expression (a threshold, a filter) are loosened below;
    the watchdog's expression has nothing to loosen."""
    fields = {field for rule, field, _, _ in LOOSENED if rule == name}
    wanted = {"for"} if name == WATCHDOG else {"for", "expr"}
    assert wanted <= fields, f"{name}: LOOSENED has no entry for {sorted(wanted - fields)}"


@dataclass(frozen=True)
class Loosened:
    """What promtool said about one loosened copy: ``changed`` counts the pattern's matches."""

    changed: int
    returncode: int
    output: str


def _loosen(promtool: str, copy: Path, entry: tuple[str, str, str, str]) -> Loosened:
    """Copy the rules into ``copy`` with one rule changed, run the test files that could
    notice (those that load its file and name it or a rule reading it), and report
    promtool's verdict."""
    name, field, pattern, replacement = entry
    (copy / "rules").mkdir(parents=True)
    (copy / "tests").mkdir()
    changed, changed_file = 0, ""
    for rule_file in RULE_FILES:
        doc = _parse(rule_file)
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert", rule.get("record")) == name and field in rule:
                    rule[field], n = re.subn(pattern, replacement, str(rule[field]))
                    changed, changed_file = changed + n, rule_file.name
        (copy / "rules" / rule_file.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    names = {name} | _readers(name)
    tests = [
        shutil.copy(test_file, copy / "tests")
        for test_file in TEST_FILES
        if f"../rules/{changed_file}" in _load(test_file)["rule_files"]
        and any(re.search(rf"{re.escape(n)}(?![a-z0-9_:])", test_file.read_text()) for n in names)
    ]
    if not changed or not tests:
        return Loosened(changed, 0, f"no test file loads {changed_file} and names {name}")
    done = _run(promtool, "test", "rules", *tests, cwd=copy)
    return Loosened(changed, done.returncode, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def loosened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Loosened]]:
    """Every entry of LOOSENED, run once, a few promtool runs at a time."""
    promtool = _promtool()
    root = tmp_path_factory.mktemp("loosened")
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            i: pool.submit(_loosen, promtool, root / str(i), entry)
            for i, entry in enumerate(LOOSENED)
        }
        yield {i: future.result() for i, future in futures.items()}


@pytest.mark.parametrize(
    ("index", "name", "field", "pattern", "replacement"),
    [(i, *entry) for i, entry in enumerate(LOOSENED)],
    ids=[f"{name}-{field}-{i}" for i, (name, field, _, _) in enumerate(LOOSENED)],
)
def test_a_loosened_rule_fails_its_tests(
    loosened: dict[int, Loosened], index: int, name: str, field: str, pattern: str, replacement: str
) -> None:
    result = loosened[index]
    assert result.changed, f"{name}: {pattern!r} no longer matches its {field}; update LOOSENED"
    assert result.returncode != 0, f"{name} with {field} loosened still passes:\n{result.output}"
    # the failure is the loosened rule's own, or that of a rule reading it
    named = {f"alertname: {n}," for n in {name} | _readers(name)} | {f'expr: "{name}'}
    assert any(n in result.output for n in named), result.output
