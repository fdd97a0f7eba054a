"""A burst of messages at once through the real processes (`bfm demo --headless` and a
second `bfm produce --burst`, run by benchmarks/burst.py): the routers' bound refuses
what is over it (``overloaded``), the producer retries, every message is acknowledged,
nothing acknowledged is lost, and no process's memory runs away.

Memory is asserted only under a generous ceiling (the benchmark reports the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "burst.py"
BURST = 3000  # three times a router's in-flight bound: some must be refused
PEAK_RSS_CEILING_MB = 400.0  # about 60 MB each when bounded: catches unbounded growth
RUN_CEILING_S = 240


def _leftovers(root: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def _burst(tmp_path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--cases=burst",
            f"--burst={BURST}",
            "--rest-s=2",
            f"--keep={tmp_path}",
            "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=RUN_CEILING_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    case: dict[str, Any] = json.loads(done.stdout)["cases"][0]
    return case


def test_a_burst_is_refused_over_the_bound_retried_and_every_message_acknowledged(
    tmp_path: Path,
) -> None:
    case = _burst(tmp_path)
    explain = json.dumps({k: v for k, v in case.items() if k != "footprint_at_rest"})
    load = case["load"]
    assert case["acked_lost"] == 0, explain
    assert case["violations"] == [], explain
    assert case["unacknowledged"] == 0, explain  # the normal traffic's and the burst's
    assert (load["sent"], load["acked"], load["shed_given_up"]) == (BURST, BURST, 0), explain
    assert load["refused_and_retried"].get("overloaded", 0) > 0, explain  # the bound held
    peaks = case["peak_memory_mb"]
    assert {"a/backbone", "b/backbone", "a/site", "load"} <= set(peaks), explain
    for label, peak in peaks.items():
        assert 0 < peak["vm_hwm_mb"] <= PEAK_RSS_CEILING_MB, (label, peak)
    assert _leftovers(tmp_path) == []
