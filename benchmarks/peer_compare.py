"""BFM against Redis Sentinel under the same faults, on the same network-namespace harness.

    python benchmarks/peer_compare.py --trials 3 --json

Per fault and trial, in one run of this script: one `bfm chaos` run (three sites, etcd,
the backbone, 500 msg/s) and one Redis Sentinel run (primary at a, replica at b, a
sentinel per site, down-after 1 s, failover-timeout 3 s; docs/sentinel.md). Both get the
same fault at site a, held the same time:

- ``kill-9``: BFM kills every component process of a (its shards' owners); Sentinel's
  primary is killed.
- ``sigstop``: BFM stops every component of a (``pause-owner-a``), Sentinel's primary is
  stopped; both are resumed ``HOLD_S`` later (the stale-owner case).
- ``isolate``: a's link goes down for ``HOLD_S`` (``isolate-a``).

Reported per fault: each side's time until writes succeed again at the survivor
(failover/chaos/peer_metrics.py says how each is measured), their ratio (BFM / Sentinel,
below 1: BFM is faster), and the writes acknowledged by a stale owner and lost. Root
only. Not part of CI: it measures, tests assert.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from failover.chaos import chaos_run
from failover.chaos.chaos_run import ChaosRun
from failover.chaos.netns import Network
from failover.chaos.peer_metrics import ratio, read_records, survivor_recovery
from failover.chaos.sentinel import SentinelSystem, available
from failover.core.topology import default_topology

FAULTS = {"kill-9": "crash-owner-a", "sigstop": "pause-owner-a", "isolate": "isolate-a"}
HOLD_S = chaos_run.HOLD_S
SENTINEL_RATE_PER_S = 50.0  # per client
FAILOVER_WAIT_S = 30.0


def bfm_trial(fault: str, work: Path, *, rate: float, duration_s: float) -> dict[str, Any]:
    run_dir = work / f"bfm-{fault}-{time.monotonic_ns()}"
    report = ChaosRun(
        run_dir,
        default_topology(shards_per_component=8),
        duration_s,
        rate,
        scenario=FAULTS[fault],
    ).run()
    injected = [f.at_s for f in report.faults if f.action == "inject"]
    recovery = survivor_recovery(read_records(run_dir / "history-1.jsonl"), injected[0])
    return {
        "recovery_s": recovery.longest_s,
        "recovery_median_s": recovery.median_s,
        "shards_of_a": recovery.shards,
        "not_recovered": recovery.not_recovered,
        "stale_acked": report.stale_epoch_accepts,
        "acked_lost": report.acked_lost,
        "dual_owner_epochs": report.dual_owner_epochs,
        "store_leader_at_fault": (report.extra.get("fault_notes") or [{}])[0].get("store_leader"),
    }


def sentinel_trial(fault: str, work: Path) -> dict[str, Any]:
    run_dir = work / f"sentinel-{fault}-{time.monotonic_ns()}"
    history = run_dir / "history.jsonl"
    with Network() as net, SentinelSystem(net, run_dir) as system:
        run = system.start_writers(120.0, SENTINEL_RATE_PER_S, history)
        time.sleep(2.0)
        if fault == "kill-9":
            fault_at = system.kill_primary()
        elif fault == "sigstop":
            fault_at = system.pause_primary()
        else:
            fault_at = system.isolate("a")
        system.wait_for_master(system.replica, timeout_s=FAILOVER_WAIT_S)
        if fault != "kill-9":
            time.sleep(max(0.0, fault_at + HOLD_S - time.time()))
            if fault == "sigstop":
                system.resume_primary()
            else:
                system.heal()
            system.wait_replica_of("a", system.replica, timeout_s=FAILOVER_WAIT_S)
        time.sleep(1.0)
        run.stop(timeout_s=5.0)
        outcome = system.analyse(history, fault_at)
    return {
        "recovery_s": outcome.by_client["reconnecting"].recovery_s,
        "promoted_after_s": (
            round(outcome.promoted_at_wall_s - fault_at, 3) if outcome.promoted_at_wall_s else None
        ),
        "stale_acked": outcome.stale_acked,
        "acked_lost": outcome.acked_lost,
        "stale_window_s": outcome.stale_window_s,
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--faults", default=",".join(FAULTS), help="Comma-separated subset.")
    parser.add_argument("--rate", type=float, default=500.0, help="BFM's messages per second.")
    parser.add_argument("--duration", type=float, default=25.0, help="BFM run seconds.")
    parser.add_argument("--json", action="store_true", help="Only the JSON report on stdout.")
    args = parser.parse_args()
    reason = available()
    if reason is not None:
        sys.exit(f"peer_compare: cannot run here: {reason}")
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        sys.exit(f"peer_compare: unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bfm-peer-") as tmp:
        work = Path(tmp)
        for fault in faults:
            trials: list[dict[str, Any]] = []
            for n in range(args.trials):
                bfm = bfm_trial(fault, work, rate=args.rate, duration_s=args.duration)
                sentinel = sentinel_trial(fault, work)
                trials.append(
                    {
                        "bfm": bfm,
                        "sentinel": sentinel,
                        "ratio": ratio(bfm["recovery_s"], sentinel["recovery_s"]),
                    }
                )
                if not args.json:
                    print(f"{fault} trial {n + 1}: {json.dumps(trials[-1])}", file=sys.stderr)
            results[fault] = {
                "bfm_recovery_s_median": _median([t["bfm"]["recovery_s"] for t in trials]),
                "sentinel_recovery_s_median": _median(
                    [t["sentinel"]["recovery_s"] for t in trials]
                ),
                "ratio_median": _median([t["ratio"] for t in trials]),
                "bfm_stale_acked": sum(t["bfm"]["stale_acked"] for t in trials),
                "bfm_acked_lost": sum(t["bfm"]["acked_lost"] for t in trials),
                "sentinel_stale_acked": sum(t["sentinel"]["stale_acked"] for t in trials),
                "sentinel_acked_lost": sum(t["sentinel"]["acked_lost"] for t in trials),
                "trials": trials,
            }
    print(
        json.dumps(
            {"benchmark": "peer_compare", "trials": args.trials, "faults": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
