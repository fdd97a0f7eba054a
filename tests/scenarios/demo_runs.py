"""Running `bfm demo --headless` as a subprocess for the scenario tests."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from failover.chaos.demo import headless_command


def run_demo(
    tmp_path: Path,
    scenario: str,
    *,
    duration_s: int,
    rate: int,
    shards: int,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
    store: str = "sqlite",
    logstore: bool = False,
    settle_s: float | None = None,
    tls: bool = False,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The finished demo (exit code, output) and its JSON report; the run is in
    ``tmp_path / "run"``. With ``settle_s`` the traffic ends that long after the
    scenario's last step (``duration_s`` is then the ceiling)."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        headless_command(
            scenario,
            run_dir=tmp_path / "run",
            report=report,
            duration_s=duration_s,
            rate_per_s=rate,
            shards=shards,
            store=store,
            logstore=logstore,
            settle_s=settle_s,
            tls=tls,
        ),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return done, data


def assert_judged_clean(done: subprocess.CompletedProcess[str], data: dict[str, Any]) -> None:
    """The demo ended well and the checker found nothing: every acknowledged message
    applied, no stale write, no dual owner, nothing left unanswered, no wait near a hang."""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert data["acked"] > 1500
    assert data["acked_lost"] == 0
    assert data["stale_epoch_accepts"] == 0
    assert data["dual_owner_epochs"] == 0
    assert data["violations"] == []
    assert data["unacknowledged"] == 0
    for kind, stats in data["unavailability_s"].items():
        assert stats["max"] < 10.0, (kind, stats)  # a ceiling that catches a hang, no more
