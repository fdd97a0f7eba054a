"""Alerts reach people, end to end on the live demo (issue 9; docs/alerting.md).

One ``bfm demo --headless --scenario site-return`` run (site a killed with kill -9 5 s
into the traffic, started again 10 s later) under the real alerting pipeline of
``failover.chaos.alerting.AlertStack``: Debian Prometheus scraping every process of the
run through its ``targets/*.json`` with the shipped ``collectors/prometheus.yml`` (1 s
scrape and evaluation) and ``alerts/rules``, Debian Alertmanager with the shipped
``alerts/alertmanager.yml`` whose webhooks post to a recording HTTP server on
127.0.0.1, and the node exporter. The stack is ready (the watchdog's notification has
arrived) before the demo starts. While the demo runs the test polls Alertmanager's
``/api/v2/alerts`` every 0.2 s, until the BfmSiteDown resolve arrives; then it stops
the demo with SIGINT (as Ctrl-C does) and reads the fault timeline from its report.

It checks that the critical BfmSiteDown{site="a"} page arrives, after the fault; that
site a's component and telemetry alerts were held in Alertmanager inhibited by it and
reached no receiver while it was firing; and that its resolve arrives while the demo (and
so its leading controller) still runs, with ``bfm_site_up{site="a"}`` back at 1, so it
is the site's return that resolved it, not the end of the demo. Seconds from fault to
page and from return to resolve are printed and recorded (``record_property``); only a
generous ceiling, to catch a hang, is asserted. The benchmark
``benchmarks/alert_latency.py`` measures them.

A second test needs no demo: it posts alerts straight to the real Alertmanager and checks
which of them each inhibition mutes (the same site only; system-level alerts never).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from failover.chaos.alerting import AlertStack, Notification, missing_packages
from failover.chaos.demo import headless_command
from failover.chaos.live_demo import site_pid

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COMPONENT_ALERTS = re.compile(r"BfmComponent.*|BfmTelemetryMissing")
DEMO_TRAFFIC_S = 90  # longer than the run needs: the test stops it once the resolve came
RUN_CEILING_S = 150.0  # from the demo's start to the resolve: only a hang takes this long
STOP_TIMEOUT_S = 120.0
POLL_S = 0.2


def _require_binaries() -> None:
    missing = missing_packages()
    if missing:
        pytest.skip(
            f"the alerting pipeline needs {', '.join(missing)}; as root: "
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y {' '.join(missing)}"
        )


def _is_site_down_a(alert: dict[str, Any]) -> bool:
    labels = alert["labels"]
    return bool(labels.get("alertname") == "BfmSiteDown" and labels.get("site") == "a")


@dataclass
class SiteReturnRun:
    """What the test saw of one site-return run: the notifications, what Alertmanager held
    for site a, and when the test saw site a's process die and come back (wall clock)."""

    run_dir: Path
    report: dict[str, Any] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    seen_in_alertmanager: dict[str, dict[str, Any]] = field(default_factory=dict)
    site_down_fingerprints: set[str] = field(default_factory=set)
    site_pid: int | None = None
    crash_seen_s: float | None = None
    return_seen_s: float | None = None
    resolved: Notification | None = None
    demo_running_at_resolve: bool = False
    site_up_at_resolve: list[Any] = field(default_factory=list)

    def fault_s(self, action: str) -> float:
        found = [
            f["at_s"]
            for f in self.report.get("faults", [])
            if f["kind"] == "site_crash" and f["target"] == "a" and f["action"] == action
        ]
        assert len(found) == 1, (
            f"the demo's fault timeline has no single site_crash {action} of a: "
            f"{self.report.get('faults')}\n{self.demo_log()}"
        )
        return float(found[0])

    def first_after(
        self, after_s: float, alertname: str, status: str, **labels: str
    ) -> Notification | None:
        return next(
            (
                n
                for n in self.notifications
                if n.received_s >= after_s and n.alerts(alertname, status, **labels)
            ),
            None,
        )

    def before_the_crash(self) -> list[tuple[str, list[Any]]]:
        """Notifications other than the watchdog's received before site a was killed."""
        crash_s = self.fault_s("inject")
        return [
            (n.receiver, [a["labels"] for a in n.payload.get("alerts", [])])
            for n in self.notifications
            if n.received_s < crash_s and n.receiver != "bfm-watchdog"
        ]

    def demo_log(self) -> str:
        return (self.run_dir.parent / "demo.log").read_text(errors="replace")[-3000:]


def _follow_site_a(seen: SiteReturnRun) -> None:
    """Note when site a's process is first seen, when it dies and when another replaces it."""
    pid = site_pid(seen.run_dir, "a")
    if seen.site_pid is None:
        seen.site_pid = pid
    elif seen.crash_seen_s is None and pid != seen.site_pid:
        seen.crash_seen_s = time.time()
    if seen.crash_seen_s is not None and seen.return_seen_s is None and pid is not None:
        seen.return_seen_s = time.time()


def _site_down_resolved_after(after_s: float) -> Callable[[Notification], bool]:
    def matches(n: Notification) -> bool:
        return n.received_s >= after_s and bool(n.alerts("BfmSiteDown", "resolved", site="a"))

    return matches


def _watch(stack: AlertStack, demo: subprocess.Popen[bytes], seen: SiteReturnRun) -> None:
    """Poll Alertmanager and site a's process until, after a came back, BfmSiteDown{a}'s
    resolve reached the webhook (or the demo ended, or the ceiling passed): which of a's
    component alerts Alertmanager held, with what state and inhibitors, and BfmSiteDown's
    fingerprints."""
    deadline = time.monotonic() + RUN_CEILING_S
    while time.monotonic() < deadline and demo.poll() is None:
        _follow_site_a(seen)
        for alert in stack.alertmanager_alerts():
            labels = alert["labels"]
            if _is_site_down_a(alert):
                seen.site_down_fingerprints.add(alert["fingerprint"])
            elif (
                seen.crash_seen_s is not None
                and labels.get("site") == "a"
                and COMPONENT_ALERTS.fullmatch(labels["alertname"])
            ):
                key = f"{labels['alertname']}{{component={labels.get('component')}}}"
                if alert["status"]["inhibitedBy"] or key not in seen.seen_in_alertmanager:
                    seen.seen_in_alertmanager[key] = alert
        if seen.return_seen_s is None:
            time.sleep(POLL_S)
            continue
        resolved = stack.webhook.wait_for(
            _site_down_resolved_after(seen.return_seen_s), timeout_s=POLL_S
        )
        if resolved is not None:
            seen.resolved = resolved
            seen.demo_running_at_resolve = demo.poll() is None
            seen.site_up_at_resolve = stack.query('bfm_site_up{site="a"}')
            return


@pytest.fixture(scope="module")
def site_return(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteReturnRun]:
    _require_binaries()
    tmp = tmp_path_factory.mktemp("alerts-demo")
    run_dir, report = tmp / "run", tmp / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "BFM_TELEMETRY"}  # metrics on
    with AlertStack(run_dir) as stack, (tmp / "demo.log").open("wb") as log:
        demo = subprocess.Popen(
            headless_command(
                "site-return",
                run_dir=run_dir,
                report=report,
                duration_s=DEMO_TRAFFIC_S,
                rate_per_s=150,
                shards=4,
            ),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        seen = SiteReturnRun(run_dir)
        try:
            _watch(stack, demo, seen)
        finally:
            if demo.poll() is None:
                demo.send_signal(signal.SIGINT)  # the demo stops every process and reports
            try:
                demo.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait(timeout=STOP_TIMEOUT_S)
        seen.notifications = stack.webhook.notifications()
    assert report.exists(), f"the demo wrote no report; its output:\n{seen.demo_log()}"
    seen.report = json.loads(report.read_text())
    yield seen


def test_site_down_pages_after_the_crash(
    site_return: SiteReturnRun, record_property: Callable[[str, object], None]
) -> None:
    run = site_return
    page = run.first_after(
        run.fault_s("inject"), "BfmSiteDown", "firing", site="a", severity="critical"
    )
    assert page is not None, (
        f"no BfmSiteDown page for site a; notifications: "
        f"{[(n.receiver, n.payload.get('groupLabels')) for n in run.notifications]}\n"
        f"{run.demo_log()}"
    )
    assert page.receiver == "bfm-page"
    seconds = page.received_s - run.fault_s("inject")
    record_property("site_down_fault_to_page_s", round(seconds, 3))
    print(f"site a crash -> BfmSiteDown page: {seconds:.2f} s")
    assert 0 < seconds < 60, "a ceiling that catches a hang, not a target (the benchmark's)"
    assert not run.first_after(0, "BfmSiteDown", "firing", site="b"), "b never went down"
    if early := run.before_the_crash():
        print(f"notified before the crash (the demo starting up): {early}")


def test_component_alerts_of_the_site_were_inhibited(site_return: SiteReturnRun) -> None:
    run = site_return
    assert run.site_down_fingerprints, "Alertmanager never held BfmSiteDown{site=a}"
    inhibited = {
        key: alert
        for key, alert in run.seen_in_alertmanager.items()
        if set(alert["status"]["inhibitedBy"]) & run.site_down_fingerprints
    }
    assert inhibited, (
        "no component or telemetry alert of site a was seen inhibited by BfmSiteDown; "
        f"seen: {[(k, a['status']) for k, a in run.seen_in_alertmanager.items()]}"
    )
    print(f"inhibited by BfmSiteDown{{site=a}}: {sorted(inhibited)}")
    for alert in inhibited.values():
        assert alert["status"]["state"] == "suppressed", alert
    # None reached a receiver from the fault until BfmSiteDown resolved.
    assert run.resolved is not None
    start_s, end_s = run.fault_s("inject"), run.resolved.received_s
    leaked = [
        (n.receiver, a["labels"])
        for n in run.notifications
        if start_s <= n.received_s <= end_s
        for a in n.payload.get("alerts", [])
        if a["labels"].get("site") == "a" and COMPONENT_ALERTS.fullmatch(a["labels"]["alertname"])
    ]
    assert leaked == [], f"component alerts of site a notified while it was down: {leaked}"


def test_site_down_resolves_when_the_site_returns(
    site_return: SiteReturnRun, record_property: Callable[[str, object], None]
) -> None:
    run = site_return
    assert run.resolved is not None, (
        f"BfmSiteDown{{site=a}} never resolved within {RUN_CEILING_S:g} s\n{run.demo_log()}"
    )
    assert run.resolved.receiver == "bfm-page"
    assert run.demo_running_at_resolve, "resolved only as the demo ended, not by the return"
    assert [float(s["value"][1]) for s in run.site_up_at_resolve] == [1.0]
    seconds = run.resolved.received_s - run.fault_s("heal")
    record_property("site_return_to_resolve_s", round(seconds, 3))
    print(f"site a back -> BfmSiteDown resolved: {seconds:.2f} s")
    assert 0 < seconds < 90, "a ceiling that catches a hang"


# -- the inhibitions in a real Alertmanager, without a demo --------------------------------


def _labels(name: str, severity: str, site: str | None = None, **more: str) -> dict[str, str]:
    labels = {"alertname": name, "severity": severity, **more}
    return {**labels, "site": site} if site else labels


INHIBITION_CASES = [  # (alert, muted?)
    (_labels("BfmSiteDown", "critical", "a"), False),
    (_labels("BfmComponentDown", "warning", "a", component="eap"), True),
    (_labels("BfmComponentCrashLooping", "critical", "a", component="eep"), True),  # by name
    (_labels("BfmTelemetryMissing", "warning", "a", component="bfm-site"), True),
    (_labels("BfmFailoverTooLong", "warning", "a"), True),  # a critical of its site
    (_labels("BfmComponentDown", "warning", "b", component="eap"), False),  # other site
    (_labels("BfmFailoverTooLong", "warning", "b"), False),
    (_labels("BfmLicenseUnlicensed", "critical"), False),  # system-level: no site
    (_labels("BfmLicenseGracePeriod", "warning"), False),  # not muted by it either
    (_labels("BfmWatchdog", "info"), False),
]


def test_inhibitions_mute_only_their_site(tmp_path: Path) -> None:
    _require_binaries()
    with AlertStack(tmp_path / "run", rule_files=[]) as stack:
        stack.post_alerts([labels for labels, _ in INHIBITION_CASES], lasting_s=300)
        deadline = time.monotonic() + 30
        held: list[Any] = []
        while time.monotonic() < deadline and len(held) < len(INHIBITION_CASES):
            held = stack.alertmanager_alerts()
            time.sleep(POLL_S)
        by_labels = {json.dumps(a["labels"], sort_keys=True): a for a in held}
        for labels, muted in INHIBITION_CASES:
            alert = by_labels[json.dumps(labels, sort_keys=True)]
            state = alert["status"]["state"]
            assert state == ("suppressed" if muted else "active"), (labels, alert["status"])
            assert bool(alert["status"]["inhibitedBy"]) is muted, labels


def test_the_run_leaves_no_process(site_return: SiteReturnRun) -> None:
    """The demo's processes and the stack's servers (their command lines name the run
    directory) are all gone."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and str(site_return.run_dir) in cmdline:
            left.append(f"{proc.name}: {cmdline}")
    assert left == []
