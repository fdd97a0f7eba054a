"""The alerts in alerts/ (ARCHITECTURE.md section 5; conventions in alerts/README.md):
promtool accepts the rules and passes their unit tests, every alert follows the naming,
label and annotation conventions, uses only catalogued metrics, and is tested both ways,
and the must-not-fire cases bite: a rule loosened on a copy fails them."""

from __future__ import annotations

import re
import shutil
import subprocess
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
ANNOTATIONS = {"summary", "description", "runbook_url"}
METRIC_NAME = re.compile(r"bfm_[a-z_]+")
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


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path}: not a YAML mapping"
    return doc


def _alerts(rule_file: Path) -> list[dict[str, Any]]:
    return [
        rule for group in _load(rule_file)["groups"] for rule in group["rules"] if "alert" in rule
    ]


def _all_alerts() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for rule_file in RULE_FILES:
        for rule in _alerts(rule_file):
            assert rule["alert"] not in found, f"{rule['alert']} is defined twice"
            found[rule["alert"]] = rule
    return found


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


def _cases(test_files: list[Path] = TEST_FILES) -> list[Case]:
    cases: list[Case] = []
    for test_file in test_files:
        doc = _load(test_file)
        default_interval = str(doc.get("evaluation_interval", "1m"))
        for group in doc["tests"]:
            interval_s = _seconds(str(group.get("interval", default_interval)))
            series = [
                (s["series"].split("{")[0], _samples(s["values"])) for s in group["input_series"]
            ]
            for test in group.get("alert_rule_test", []):
                eval_s = _seconds(str(test["eval_time"]))
                step = int(eval_s // interval_s)
                present = {
                    name
                    for name, samples in series
                    if step < len(samples) and samples[step] is not None
                }
                cases.append(
                    Case(
                        test_file=test_file,
                        group=group.get("name", "?"),
                        alertname=test["alertname"],
                        eval_s=eval_s,
                        fires=bool(test.get("exp_alerts")),
                        series_at_eval=frozenset(present),
                    )
                )
    return cases


def _metric_names(rule: dict[str, Any]) -> set[str]:
    """The bfm_ metrics an alert reads: its expression and its annotations' queries."""
    text = rule["expr"] + " ".join(rule.get("annotations", {}).values())
    return set(METRIC_NAME.findall(text))


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
    assert labels.get("severity") in SEVERITIES, f"{name}: severity must be one of {SEVERITIES}"
    # site comes from the expression (the dongle's), never a fixed label on the rule
    assert set(labels) == {"severity"}, f"{name}: rule labels {sorted(labels)}"
    annotations = rule.get("annotations", {})
    missing = ANNOTATIONS - set(annotations)
    assert not missing, f"{name}: missing annotations {sorted(missing)}"
    assert all(str(annotations[a]).strip() for a in ANNOTATIONS), f"{name}: empty annotation"
    assert annotations["runbook_url"] == f"alerts/runbooks/{name}.md", name
    assert (ROOT / annotations["runbook_url"]).is_file(), f"{name}: no runbook"
    assert "for" in rule and _seconds(str(rule["for"])) > 0, f"{name}: needs a `for:`"


def test_alerts_read_only_catalogued_metrics() -> None:
    known = set(REGISTRY._names_to_collectors) | set(  # the registered series names
        re.findall(r"`(bfm_[a-z_]+)`", METRICS_DOC.read_text())
    )
    for name, rule in _all_alerts().items():
        unknown = sorted(_metric_names(rule) - known)
        assert not unknown, f"{name} reads metrics not in the catalogue: {unknown}"
        assert _metric_names(rule), f"{name} reads no bfm_ metric"


def test_tests_name_only_existing_alerts() -> None:
    """promtool passes ``exp_alerts: []`` for an alert name that no rule has."""
    unknown = sorted({c.alertname for c in _cases()} - set(_all_alerts()))
    assert not unknown, f"alerts/tests name alerts no rule defines: {unknown}"


@pytest.mark.parametrize("name", sorted(_all_alerts()))
def test_alert_is_tested_both_ways(name: str) -> None:
    cases = [c for c in _cases() if c.alertname == name]
    assert any(c.fires for c in cases), f"{name}: no test case where it fires"
    metrics = _metric_names(_all_alerts()[name])
    silent = [c for c in cases if not c.fires]
    assert silent, f"{name}: no must-not-fire case (exp_alerts: [])"
    for case in silent:
        assert case.series_at_eval & metrics, (
            f"{name}: the must-not-fire case at {case.eval_s:g}s in {case.group!r} has no "
            f"sample of {sorted(metrics)} at that time: it would pass with the rule broken"
        )


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
    present = [c.series_at_eval for c in _cases([test_file])]
    assert present == [{"bfm_a", "bfm_b"}, {"bfm_a"}, set(), set()]


# Each loosens one alert on a copy of the rules, (alert, field, regex, replacement): a
# shorter `for:`, a threshold moved past a must-not-fire case, or an aggregation that keeps
# the replica's labels (so a leader change restarts the alert).
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
]


@pytest.mark.parametrize(("name", "field", "pattern", "replacement"), LOOSENED)
def test_a_loosened_rule_fails_its_tests(
    tmp_path: Path, name: str, field: str, pattern: str, replacement: str
) -> None:
    promtool = _promtool()
    copy = tmp_path / "alerts"
    shutil.copytree(ALERTS / "tests", copy / "tests")
    (copy / "rules").mkdir()
    changed = 0
    for rule_file in RULE_FILES:
        doc = _load(rule_file)
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    rule[field], n = re.subn(pattern, replacement, str(rule[field]))
                    changed += n
        (copy / "rules" / rule_file.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    assert changed, f"{name}: {pattern!r} no longer matches its {field}; update LOOSENED"
    tests = sorted((copy / "tests").glob("*.yaml"))
    done = _run(promtool, "test", "rules", *tests, cwd=copy)
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"{name} with {field} loosened still passes:\n{output}"
    assert f"alertname: {name}," in output, output
