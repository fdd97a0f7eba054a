"""Failover time with real processes: repeat each scenario and report unavailability.

    python benchmarks/failover_time.py --trials 5 --json

Each trial is one `bfm demo --headless` run (three sites, routers, modules, a producer)
with one fault; the unavailability of that fault (the longest a message waited for its
acknowledgement because of it) is read from the run's report. Prints one JSON report
with p50/p99/max per scenario, the messages per second achieved, and whether the checker
found anything (it must not). Not part of CI: it measures, tests assert.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from failover.chaos.demo import headless_command
from failover.chaos.report import summarize

SCENARIOS = {
    "component-crash": "component_crash",
    "component-pause": "component_pause",
    "site-crash": "site_crash",
    "leader-crash": "leader_crash",
}


def trial(scenario: str, *, rate: int, duration_s: int, work: Path) -> dict[str, Any]:
    run_dir = work / f"{scenario}-{time.monotonic_ns()}"
    report = run_dir.with_suffix(".json")
    started = time.monotonic()
    done = subprocess.run(
        headless_command(
            scenario, run_dir=run_dir, report=report, duration_s=duration_s, rate_per_s=rate
        ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    kind = SCENARIOS[scenario]
    return {
        "ok": done.returncode == 0,
        "unavailability_s": data.get("unavailability_s", {}).get(kind, {}).get("max"),
        "acked": data.get("acked", 0),
        "violations": len(data.get("violations", [])) if data else None,
        "wall_s": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--rate", type=int, default=200, help="messages per second")
    parser.add_argument("--duration", type=int, default=14, help="seconds of traffic per trial")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bfm-bench-") as tmp:
        for scenario in args.scenario or sorted(SCENARIOS):
            runs = [
                trial(scenario, rate=args.rate, duration_s=args.duration, work=Path(tmp))
                for _ in range(args.trials)
            ]
            times = [r["unavailability_s"] for r in runs if r["unavailability_s"] is not None]
            results[scenario] = {
                "unavailability_s": summarize(times),
                "trials": len(runs),
                "failed_trials": sum(1 for r in runs if not r["ok"]),
                "violations": sum(r["violations"] or 0 for r in runs),
                "messages_per_s": round(
                    sum(r["acked"] for r in runs) / (len(runs) * args.duration), 1
                ),
            }
            if not args.json:
                print(scenario, json.dumps(results[scenario]), file=sys.stderr)
    print(
        json.dumps(
            {"benchmark": "failover_time", "rate_per_s": args.rate, "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
