"""Unavailability under real partitions: repeat `bfm chaos` scenarios and summarize.

    python benchmarks/chaos_times.py --trials 5 --scenarios isolate-a,isolate-b --json

Each trial is one chaos run (three sites in network namespaces, etcd, 500 msg/s from the
clients' namespace, the fault at +5 s for 8 s; docs/chaos.md). Per scenario: p50/p99/max of
the unavailability the fault caused (the longest any client message waited for its
acknowledgement because of it), the same for what followed the heal, where the etcd
leader was when the fault struck (a cut-off leader costs an election), and the checker's
counts summed over the trials (they must be 0). Root only. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from failover.chaos import netns
from failover.chaos.chaos_run import SCENARIOS, ChaosRun
from failover.chaos.report import summarize
from failover.core.topology import default_topology

KEEP_DIR = Path(tempfile.gettempdir()) / "bfm-chaos-kept"
DEFAULT = "isolate-a,isolate-b,isolate-w,cut-a-b,oneway-a-to-b,pause-leader,pause-owner-a"
DEFAULT += ",kill-store-w,flap-a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--scenarios", default=DEFAULT, help="Comma-separated ids.")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=25.0)
    parser.add_argument("--json", action="store_true", help="Only the JSON report on stdout.")
    args = parser.parse_args()
    reason = netns.available()
    if reason is not None:
        sys.exit(f"chaos_times: cannot run here: {reason}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        sys.exit(f"chaos_times: unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bfm-chaos-") as tmp:
        for scenario in scenarios:
            by_kind: dict[str, list[float]] = {}
            leaders: Counter[str] = Counter()
            counts = Counter[str]()
            for n in range(args.trials):
                run_dir = Path(tmp) / f"{scenario}-{n}-{time.monotonic_ns()}"
                report = ChaosRun(
                    run_dir,
                    default_topology(shards_per_component=8),
                    args.duration,
                    args.rate,
                    scenario=scenario,
                ).run()
                if report.violations:  # keep the evidence: the temporary directory goes
                    kept = KEEP_DIR / run_dir.name
                    shutil.copytree(run_dir, kept, ignore=shutil.ignore_patterns("etcd"))
                    counts["kept_runs"] += 1
                    print(f"chaos_times: violations; run kept in {kept}", file=sys.stderr)
                for kind, values in report.unavailability_s.items():
                    by_kind.setdefault(kind, []).extend(values)
                for note in report.extra.get("fault_notes", []):
                    leaders[str(note.get("store_leader"))] += 1
                for field in ("acked_lost", "stale_epoch_accepts", "dual_owner_epochs"):
                    counts[field] += getattr(report, field)
                counts["acked"] += report.acked
                if not args.json:
                    print(f"{scenario} trial {n + 1}: {report.unavailability_s}", file=sys.stderr)
            results[scenario] = {
                "unavailability_s": {k: summarize(v) for k, v in sorted(by_kind.items())},
                "store_leader_at_fault": dict(leaders),
                **dict(counts),
            }
    report_json = {"benchmark": "chaos_times", "trials": args.trials, "rate_per_s": args.rate}
    print(json.dumps({**report_json, "scenarios": results}, indent=2))


if __name__ == "__main__":
    main()
