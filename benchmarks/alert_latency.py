"""Fault to notification: seconds from a fault to the alert at the receiver's webhook.

    python benchmarks/alert_latency.py --trials 3 --json

Each trial is one `bfm demo --headless` run with one fault, under the real alerting
pipeline of ``failover.chaos.alerting.AlertStack`` with the shipped settings: Debian
Prometheus (collectors/prometheus.yml: scrape and evaluation every 1 s; alerts/rules),
Debian Alertmanager (alerts/alertmanager.yml: critical group_wait 1 s, warning 30 s),
its webhooks pointed at a recording server on 127.0.0.1. The stack is fresh per trial and
ready (the watchdog's notification arrived) before the demo starts. Faults:

- ``site-crash``: kill -9 of every process of site a: the seconds until the critical
  BfmSiteDown{site="a"} page arrives;
- ``component-crash``: kill -9 of site a's EAP module while its site's supervisor
  restarts it: the seconds until the warning BfmComponentRestarted{site="a"} ticket
  arrives (the other component alerts wait ``for: 10s`` and the restart takes less). Its
  traffic runs 45 s after the fault, past the warning route's 30 s group_wait.

Per fault, ``held_after_fault`` lists every alert about site a that Prometheus held
(pending or firing) between the fault and the end of the traffic: the longest unbroken
stretch (polled every 0.25 s) and in how many trials it reached firing.

The fault time is the demo's fault timeline (wall clock, as the webhook's receive time);
only notifications received before the demo's traffic ended count (the demo then stops
every process, which would set off alerts of its own). Prints one JSON report. Not part of
CI: it measures, tests assert (tests/e2e/test_alerts_demo.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from failover.chaos.alerting import (
    RESEND_DELAY,
    SHIPPED_ALERTMANAGER,
    SHIPPED_PROMETHEUS,
    AlertStack,
    Notification,
)
from failover.chaos.demo import FAULT_AT_S, headless_command
from failover.chaos.report import summarize

ROOT = Path(__file__).resolve().parents[1]
FAULTS = {  # scenario -> (fault kind on the timeline, seconds of traffic, the alert it waits for)
    "site-crash": ("site_crash", 25, "BfmSiteDown"),
    "component-crash": ("component_crash", 50, "BfmComponentRestarted"),
}
POLL_S = 0.25


def shipped_settings() -> dict[str, Any]:
    prometheus = yaml.safe_load(SHIPPED_PROMETHEUS.read_text())
    route = yaml.safe_load(SHIPPED_ALERTMANAGER.read_text())["route"]
    timings = ("group_wait", "group_interval", "repeat_interval")
    return {
        "scrape_interval": prometheus["global"]["scrape_interval"],
        "evaluation_interval": prometheus["global"]["evaluation_interval"],
        "prometheus_resend_delay": RESEND_DELAY,
        "routes": {
            "default": {k: route[k] for k in timings},
            **{
                child["receiver"]: {k: child.get(k, route[k]) for k in timings}
                for child in route["routes"]
            },
        },
    }


def started_s(alert: dict[str, Any]) -> float:
    """An alert's ``startsAt`` (RFC 3339, maybe with nanoseconds) as seconds since epoch."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", str(alert.get("startsAt", ""))).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def first_notification(
    scenario: str, notifications: list[Notification], after_s: float, before_s: float
) -> tuple[Notification, dict[str, Any]] | None:
    """The first notification in the window that tells of the fault, and its alert."""
    for n in notifications:
        if not after_s <= n.received_s <= before_s:
            continue
        for alert in n.payload.get("alerts", []):
            labels = alert.get("labels", {})
            if alert.get("status") != "firing" or labels.get("site") != "a":
                continue
            if labels.get("alertname") != FAULTS[scenario][2]:
                continue
            if started_s(alert) < after_s - 1.0:  # firing before the fault: not about it
                continue
            return n, alert
    return None


def site_a_alerts(alerts: list[Any]) -> dict[str, str]:
    """Prometheus's pending and firing alerts about site a: ``name{component}`` -> state."""
    return {
        f"{a['labels']['alertname']}{{{a['labels'].get('component', '')}}}": a["state"]
        for a in alerts
        if a["labels"].get("site") == "a" and a["labels"]["alertname"] != "BfmWatchdog"
    }


def longest_held(polls: list[tuple[float, dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """Per alert, the longest unbroken stretch of polls it was pending or firing in, and
    whether it reached firing in Prometheus (notified or not: group_wait, inhibition)."""
    held: dict[str, dict[str, Any]] = {}
    since: dict[str, float] = {}
    for when, alerts in polls:
        for key in list(since):
            if key not in alerts:
                del since[key]
        for key, state in alerts.items():
            start = since.setdefault(key, when)
            entry = held.setdefault(key, {"longest_s": 0.0, "fired": False})
            entry["longest_s"] = round(max(entry["longest_s"], when - start), 1)
            entry["fired"] = entry["fired"] or state == "firing"
    return dict(sorted(held.items()))


def trial(scenario: str, *, rate: int, work: Path) -> dict[str, Any]:
    kind, traffic_s, _ = FAULTS[scenario]
    run_dir = work / f"{scenario}-{time.monotonic_ns()}"
    report = run_dir.with_suffix(".json")
    polls: list[tuple[float, dict[str, str]]] = []  # (when, {site a's alert: its state})
    env = {k: v for k, v in os.environ.items() if k != "BFM_TELEMETRY"}
    log_path = work / f"{run_dir.name}.log"
    with AlertStack(run_dir) as stack:
        with log_path.open("wb") as log:
            demo = subprocess.Popen(
                headless_command(
                    scenario,
                    run_dir=run_dir,
                    report=report,
                    duration_s=traffic_s,
                    rate_per_s=rate,
                    shards=4,
                ),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + traffic_s + 120
        while demo.poll() is None and time.monotonic() < deadline:
            polls.append((time.time(), site_a_alerts(stack.prometheus_alerts())))
            time.sleep(POLL_S)
        if demo.poll() is None:
            demo.kill()
        demo.wait(timeout=60)
        notifications = stack.webhook.notifications()
    data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    injected = [f["at_s"] for f in data.get("faults", []) if f["kind"] == kind]
    if not injected:
        tail = log_path.read_text(errors="replace")[-800:]
        return {"ok": False, "why": f"no {kind} on the demo's fault timeline; its log: {tail}"}
    fault_s = float(injected[0])
    traffic_end_s = fault_s - FAULT_AT_S + traffic_s
    found = first_notification(scenario, notifications, fault_s, traffic_end_s)
    result: dict[str, Any] = {
        "ok": True,
        "demo_exit": demo.returncode,
        "held_s": longest_held([p for p in polls if fault_s <= p[0] <= traffic_end_s]),
    }
    if found is not None:
        n, alert = found
        result.update(
            {
                "seconds": round(n.received_s - fault_s, 3),
                "alert": alert["labels"]["alertname"],
                "receiver": n.receiver,
            }
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rate", type=int, default=150, help="messages per second")
    parser.add_argument("--scenario", choices=sorted(FAULTS), action="append")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bfm-alert-bench-") as tmp:
        for scenario in args.scenario or sorted(FAULTS, reverse=True):
            runs = [trial(scenario, rate=args.rate, work=Path(tmp)) for _ in range(args.trials)]
            seconds = [r["seconds"] for r in runs if "seconds" in r]
            held: dict[str, dict[str, Any]] = {}
            for r in runs:
                for key, entry in r.get("held_s", {}).items():
                    both = held.setdefault(key, {"longest_s": 0.0, "fired_in": 0})
                    both["longest_s"] = max(both["longest_s"], entry["longest_s"])
                    both["fired_in"] += int(entry["fired"])
            results[scenario] = {
                "fault_to_notification_s": summarize(seconds),
                "trials": len(runs),
                "notified": len(seconds),
                "failed_trials": [r["why"] for r in runs if not r["ok"]],
                "alerts": sorted({r["alert"] for r in runs if "alert" in r}),
                "receivers": sorted({r["receiver"] for r in runs if "receiver" in r}),
                "held_after_fault": dict(sorted(held.items())),
                "per_trial": runs,
            }
            if not args.json:
                print(scenario, json.dumps(results[scenario]), file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "alert_latency",
                "rate_per_s": args.rate,
                "settings": shipped_settings(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
