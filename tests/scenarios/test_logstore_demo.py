"""A site-crash failover followed end to end with `bfm logs` and `bfm trace`, on the demo's
own log store (real processes: the demo ships every process's logs and spans to its
``bfm logstore serve``; afterwards the test serves the same file again and asks the CLI).

From a producer's delayed alarm (found with `bfm logs`) to the controller's failover
decision (a span link, followed one hop), with the crashed site's last lines and the
surviving site's lines in one timeline. Without following links (``--no-links``) the
decision is missing: the assertions depend on the link, not on luck.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_runs import run_demo

from failover.chaos.logstore_process import LogStoreProcess

pytestmark = pytest.mark.scenario

EXPORT_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200", "BFM_TELEMETRY": "on"}  # spans leave in time
DELAYED_ALARMS = '{component="producer"} |= "delayed" | json | kind="alarm"'


def _bfm(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "failover", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BFM_LOKI_URL": url, "COLUMNS": "200"},
        check=False,
    )


@pytest.fixture
def crashed_run(tmp_path: Path) -> Iterator[str]:
    """The URL of the log store of a finished site-crash demo, served again."""
    done, data = run_demo(
        tmp_path,
        "site-crash",
        duration_s=14,
        rate=150,
        shards=4,
        env=EXPORT_ENV,
        timeout_s=240,
        logstore=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert data["violations"] == []
    run_dir = tmp_path / "run"
    assert (run_dir / "logs.db").exists(), "the demo ran no log store"
    again = LogStoreProcess(run_dir)  # bfm logstore serve on the run's logs.db
    try:
        yield again.start()
    finally:
        again.stop()


def _rows(url: str, trace_id: str, *extra: str) -> list[dict[str, Any]]:
    done = _bfm("trace", trace_id, "--json", *extra, url=url)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _failover_of_a(row: dict[str, Any]) -> bool:
    return "failover" in row["text"] and "was: a" in row["text"]


def _spans(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == "span" and r["text"].startswith(name + " ")]


def test_a_delayed_alarm_leads_to_the_failover_with_both_sites_logs(crashed_run: str) -> None:
    url = crashed_run
    found = _bfm("logs", DELAYED_ALARMS, "--json", "--limit", "40", url=url)
    assert found.returncode == 0, found.stderr
    trace_ids = []
    for text in found.stdout.splitlines():
        line = json.loads(json.loads(text)["line"])
        if line.get("trace_id") and line.get("owner_site") == "b":
            trace_ids.append(line["trace_id"])
    assert trace_ids, f"no delayed alarm with a trace id was logged: {found.stdout[:2000]}"

    # Most alarms delayed by the crash waited for the failover; one whose shard b already
    # held waited only for a's router (its module span links to b's earlier grant).
    # (Alarms delayed by a's router alone come first when the failover acknowledged the
    # rest in one burst: look through them all, up to the first that waited for it.)
    failovers = []
    for trace_id in trace_ids:
        timeline = _rows(url, trace_id)
        assert _spans([r for r in timeline if r["linked"]], "bfm.decision"), timeline
        if any(_failover_of_a(r) for r in timeline if r["linked"]):
            failovers.append(timeline)
            break
    assert failovers, f"none of {len(trace_ids)} delayed alarms links to the failover of a"
    rows = failovers[0]
    focus = [r for r in rows if not r["linked"] and r["kind"] != "context"]
    # the message: produced at a's producer, routed, applied by b's EAP module
    assert _spans(focus, "bfm.produce")
    assert _spans(focus, "bfm.route")
    assert {r["site"] for r in _spans(focus, "bfm.apply")} == {"b"}
    assert any(r["kind"] == "event" and "bfm.refused" in r["text"] for r in focus), focus
    # the decision behind b's grant, one link away: the leader's failover of site a
    linked = [r for r in rows if r["linked"]]
    assert _spans(linked, "bfm.decision"), "the failover decision is not in the timeline"
    assert {r["site"] for r in linked if r["kind"] == "log"} >= {"b"}, "no line of site b"
    # what the crashed site said last, before the controller saw it go: shown when the
    # failover's bfm.detect recorded a going. (When a decision of an earlier round, such
    # as a start-up hand-back still running at the crash, took that observation, the
    # failover's detect span is empty and there is no "before" to show; seen in CI.)
    context = [r for r in rows if r["kind"] == "context"]
    crashed = [r for r in context if r["site"] == "a" and r["component"] != "producer"]
    saw_a = [r for r in linked if r["kind"] == "event" and "bfm.site=a" in r["text"].split()]
    if saw_a:
        assert crashed, f"no last line of site a's own processes: {context}; saw: {saw_a}"
    decision_ns = min(r["ts_ns"] for r in _spans(linked, "bfm.decision"))
    assert all(r["ts_ns"] <= decision_ns for r in context)
    # one timeline, in time order
    assert [r["ts_ns"] for r in rows] == sorted(r["ts_ns"] for r in rows)

    # the decision comes from following the link: without it, it is gone
    focus_id = next(r["trace_id"] for r in focus if r["kind"] == "span")
    unlinked = _rows(url, focus_id, "--no-links")
    assert not _spans(unlinked, "bfm.decision")
    assert not [r for r in unlinked if r["kind"] == "context"]
