"""A full rolling update under load: how long it takes, and how long any message waited.

    python benchmarks/rolling_update.py --json
    python benchmarks/rolling_update.py --scenario bad-update --trials 2

Each trial is one `bfm demo --headless --scenario rolling-update` (real processes: three
site processes, twelve components, a producer at ``--rate`` msg/s; the release updates
all six components at both worker sites plus the OS, a real restart of the site's
process, and the cluster of every site). Reported per trial, from the demo's own report
and the update's state in the store:

- ``update_s``: from the start of the update to its end (the fault timeline's "update"
  inject and heal);
- ``max_unavailability_s``: the checker's longest wait of any message during the update
  (the target is <= 1 s);
- the checker's counts (acked_lost, stale_epoch_accepts, dual_owner_epochs: all must be 0)
  and the update's outcome.

Not part of CI (minutes per trial). Compare runs made on the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from failover.adapters.store_url import open_store
from failover.chaos.demo import headless_command
from failover.runtime.update_admin import read_update


def one_trial(root: Path, scenario: str, rate: float, duration_s: float) -> dict[str, Any]:
    run_dir, report = root / "run", root / "report.json"
    done = subprocess.run(
        headless_command(
            scenario,
            run_dir=run_dir,
            report=report,
            duration_s=duration_s,
            rate_per_s=rate,
            shards=4,
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=duration_s + 300,
    )
    if done.returncode != 0 or not report.exists():
        sys.exit(f"rolling_update: the demo failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(report.read_text())
    at = {(f["kind"], f["action"]): f["at_s"] for f in data["faults"]}
    store = open_store(f"sqlite://{run_dir / 'bfm.db'}")
    try:
        state, _ = read_update(store)
    finally:
        store.close()
    started, ended = at.get(("update", "inject")), at.get(("update", "heal"))
    waits = data["unavailability_s"].get("update", {})
    return {
        "outcome": state.outcome.value if state is not None else "not started",
        "steps": len(state.steps) if state is not None else 0,
        "update_s": round(ended - started, 1) if started and ended else None,
        "max_unavailability_s": waits.get("max"),
        "acked": data["acked"],
        "acked_lost": data["acked_lost"],
        "stale_epoch_accepts": data["stale_epoch_accepts"],
        "dual_owner_epochs": data["dual_owner_epochs"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--scenario", default="rolling-update")
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--duration", type=float, default=300.0, help="Seconds of traffic.")
    parser.add_argument("--json", action="store_true", help="Only the JSON report on stdout.")
    args = parser.parse_args()
    trials = []
    with tempfile.TemporaryDirectory(prefix="bfm-update-") as tmp:
        for n in range(args.trials):
            trial = one_trial(Path(tmp) / str(n), args.scenario, args.rate, args.duration)
            trials.append(trial)
            if not args.json:
                print(f"trial {n + 1}: {json.dumps(trial)}", file=sys.stderr)
    durations = [t["update_s"] for t in trials if t["update_s"] is not None]
    waits = [t["max_unavailability_s"] for t in trials if t["max_unavailability_s"] is not None]
    summary = {
        "scenario": args.scenario,
        "rate_per_s": args.rate,
        "trials": trials,
        "update_s_median": statistics.median(durations) if durations else None,
        "max_unavailability_s": max(waits) if waits else None,
        "acked_lost": sum(t["acked_lost"] for t in trials),
    }
    print(json.dumps(summary, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
