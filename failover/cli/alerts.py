"""`bfm alerts test`: the alert suites a user runs after changing the rules or the routing.

Four suites over an alerts folder (default: the repository's ``alerts/``), one line each:

- ``promtool check rules``: every ``rules/*.yaml`` parses and its expressions are valid;
- ``promtool test rules``: the unit tests in ``tests/*.yaml`` (fires / must not fire);
- ``amtool check-config``: ``alertmanager.yml`` is a valid Alertmanager configuration;
- ``amtool routes test``: every case of ``routes_test.yaml`` (a label set and the
  receivers it must reach) resolves to exactly those receivers
  (``amtool config routes test --verify.receivers``).

Exit codes: 0 every suite passed, 1 a suite failed (its tool's output follows the lines),
2 promtool or amtool is missing (the message names the Debian package) or the folder is
not an alerts folder. ``--json`` prints one object instead. docs/alerting.md explains the
routing tree and the inhibitions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from failover.cli.errors import CheckFailed, UsageError

ALERTMANAGER_CONFIG = "alertmanager.yml"
ROUTES_TEST = "routes_test.yaml"
TOOL_TIMEOUT_S = 60.0
TOOL_PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}

alerts_app = typer.Typer(
    help="Alerting rules and Alertmanager routing: check and test them.", no_args_is_help=True
)
AlertsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--alerts-dir",
        help="The alerts folder: rules/, tests/, alertmanager.yml, routes_test.yaml "
        "(default: the repository's alerts/).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@dataclass(frozen=True)
class SuiteResult:
    """One suite's verdict: a one-line summary, and the tool's output when it failed."""

    name: str
    ok: bool
    summary: str
    detail: str = ""


@dataclass(frozen=True)
class RouteCase:
    """One routing test: an alert's labels and the receivers it must reach, in order."""

    name: str
    labels: dict[str, str]
    receivers: tuple[str, ...]


def default_alerts_dir() -> Path:
    """The shipped ``alerts/`` folder (a checkout's, or an installed wheel's)."""
    from failover.assets import AssetNotFound, asset_dir

    try:
        return asset_dir("alerts")
    except AssetNotFound as err:
        raise UsageError(str(err)) from None


def find_tools() -> dict[str, str]:
    """The paths of promtool and amtool; UsageError (exit 2) naming the packages if not."""
    found = {tool: shutil.which(tool) for tool in TOOL_PACKAGES}
    missing = sorted(tool for tool, path in found.items() if path is None)
    if missing:
        packages = " ".join(TOOL_PACKAGES[tool] for tool in missing)
        raise UsageError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
            f"as root: DEBIAN_FRONTEND=noninteractive apt-get install -y {packages}"
        )
    return {tool: str(path) for tool, path in found.items()}


def load_route_cases(path: Path) -> tuple[Path, list[RouteCase]]:
    """The Alertmanager config a routes test file names (relative to the file) and its
    cases; ValueError with a sentence naming the file when it is malformed."""
    try:
        doc: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list) or not doc["cases"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty list 'cases'")
    config = path.parent / str(doc.get("config", ALERTMANAGER_CONFIG))
    cases = []
    for number, case in enumerate(doc["cases"], start=1):
        labels, receivers = (case or {}).get("labels"), (case or {}).get("receivers")
        if not isinstance(labels, dict) or not labels or not isinstance(receivers, list):
            raise ValueError(
                f"{path}: case {number} needs 'labels' (a mapping) and 'receivers' (a list)"
            )
        if not receivers:
            raise ValueError(f"{path}: case {number} names no receiver")
        name = str(case.get("name") or f"case {number}")
        cases.append(
            RouteCase(
                name,
                {str(k): str(v) for k, v in labels.items()},
                tuple(str(r) for r in receivers),
            )
        )
    return config, cases


def _run(argv: list[str]) -> tuple[int, str]:
    """Exit code and combined output of one tool run; a timeout counts as a failure."""
    try:
        done = subprocess.run(  # noqa: S603 - promtool/amtool from PATH, our own arguments
            argv, capture_output=True, text=True, check=False, timeout=TOOL_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return 1, f"{' '.join(argv[:3])} did not finish within {TOOL_TIMEOUT_S:.0f} s"
    return done.returncode, (done.stdout + done.stderr).strip()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def check_rules_suite(promtool: str, alerts_dir: Path) -> SuiteResult:
    name = "promtool check rules"
    files = sorted((alerts_dir / "rules").glob("*.yaml"))
    if not files:
        return SuiteResult(name, False, f"no rule files in {alerts_dir / 'rules'}")
    code, output = _run([promtool, "check", "rules", *map(str, files)])
    if code != 0:
        return SuiteResult(name, False, "promtool rejected the rules", output)
    rules = [
        rule
        for file in files
        for group in (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("groups", [])
        for rule in group.get("rules", [])
    ]
    alerts = sum(1 for rule in rules if "alert" in rule)
    summary = (
        f"{_count(len(files), 'file')}: {_count(alerts, 'alert')}, "
        f"{_count(len(rules) - alerts, 'recording rule')}"
    )
    return SuiteResult(name, True, summary)


def rule_tests_suite(promtool: str, alerts_dir: Path) -> SuiteResult:
    name = "promtool test rules"
    files = sorted((alerts_dir / "tests").glob("*.yaml"))
    if not files:
        return SuiteResult(name, False, f"no rule tests in {alerts_dir / 'tests'}")
    code, output = _run([promtool, "test", "rules", *map(str, files)])
    if code != 0:
        return SuiteResult(name, False, "a rule test failed", output)
    return SuiteResult(name, True, f"{_count(len(files), 'test file')} passed")


def check_config_suite(amtool: str, alerts_dir: Path) -> SuiteResult:
    name = "amtool check-config"
    config = alerts_dir / ALERTMANAGER_CONFIG
    if not config.is_file():
        return SuiteResult(name, False, f"no {config}")
    code, output = _run([amtool, "check-config", str(config)])
    if code != 0:
        return SuiteResult(name, False, f"amtool rejected {config.name}", output)
    return SuiteResult(name, True, f"{config.name} is valid")


def route_labels(labels: dict[str, str]) -> list[str]:
    """amtool's label arguments: ``name="value"`` with the value quoted as a matcher."""
    return [
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in labels.items()
    ]


def route_tests_suite(
    amtool: str, alerts_dir: Path, routes_file: Path | None = None
) -> SuiteResult:
    name = "amtool routes test"
    try:
        config, cases = load_route_cases(routes_file or alerts_dir / ROUTES_TEST)
    except ValueError as err:
        return SuiteResult(name, False, str(err))
    failures = []
    for case in cases:
        code, output = _run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={config}",
                f"--verify.receivers={','.join(case.receivers)}",
                *route_labels(case.labels),
            ]
        )
        if code != 0:
            got = [line for line in output.splitlines() if not line.lower().startswith("warning")]
            failures.append(
                f"{case.name}: {{{', '.join(route_labels(case.labels))}}} should reach "
                f"{', '.join(case.receivers)}, reached {' / '.join(got) or 'nothing'}"
            )
    if failures:
        return SuiteResult(
            name,
            False,
            f"{len(failures)} of {_count(len(cases), 'case')} failed",
            "\n".join(failures),
        )
    return SuiteResult(name, True, f"{_count(len(cases), 'case')} passed")


def run_suites(alerts_dir: Path, tools: dict[str, str]) -> list[SuiteResult]:
    """Every suite over ``alerts_dir``, in order, each run even when one before failed."""
    return [
        check_rules_suite(tools["promtool"], alerts_dir),
        rule_tests_suite(tools["promtool"], alerts_dir),
        check_config_suite(tools["amtool"], alerts_dir),
        route_tests_suite(tools["amtool"], alerts_dir),
    ]


@alerts_app.command("test")
def run_tests(alerts_dir: AlertsDirOption = None, as_json: JsonOption = False) -> None:
    """Check and test the rules (promtool) and the Alertmanager routing (amtool)."""
    directory = alerts_dir if alerts_dir is not None else default_alerts_dir()
    if not (directory / "rules").is_dir():
        raise UsageError(
            f"{directory} has no rules/ folder; pass --alerts-dir with the alerts folder"
        )
    results = run_suites(directory, find_tools())
    failed = [r for r in results if not r.ok]
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "suites": [asdict(r) for r in results]}, indent=2))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            typer.echo(f"{'ok  ' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.summary}")
        for r in failed:
            if r.detail:
                typer.echo(
                    f"\n{r.name}:\n" + "\n".join(f"  {line}" for line in r.detail.splitlines())
                )
    if failed:
        raise CheckFailed(
            f"{_count(len(failed), 'alert suite')} of {len(results)} failed: "
            + ", ".join(r.name for r in failed)
        )


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
