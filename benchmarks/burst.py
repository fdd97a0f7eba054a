"""Bursts and sustained overload through the real processes: peak memory of every process,
what was delayed, refused and shed, and whether anything acknowledged was lost.

    python benchmarks/burst.py --json
    python benchmarks/burst.py --cases burst --burst 3000 --json

Each case runs on a fresh `bfm demo --headless` (sites a, b and w, a router and six
modules per worker site, the embedded log store; the demo's own producer sends the normal
``--rate``, 150 msg/s as the scenario tests use). Once its traffic flows:

1. at rest: ``--rest-s`` seconds of the normal traffic, sampling every process of the run:
   BFM's own footprint per site (the ``bfm site run`` process: controller, agent,
   telemetry) beside ARCHITECTURE.md section 6's target (<= 300 MB RSS, <= 5 % of 2 vCPU),
   and the site's components (the reference backbone) for context;
2. the load, a second `bfm produce` (seed 2) on top of the normal traffic:
   ``burst``: ``--burst`` messages at once (devices back online after an outage with their
   queued events; the producer's window is the whole burst, so all go out at once), or
   ``overload``: ``--overload-factor`` times the normal rate in all for ``--overload-s``;
3. the demo's producer is told to finish (SIGTERM: it waits for its acks), the demo ends
   and judges the run: the checker's ``acked_lost`` (must be 0) and ``unacknowledged``
   cover both producers.

Reported per case: peak RSS per process (VmRSS sampled every 0.5 s, and the kernel's
VmHWM), the load's acks, waits (first send to ack: p50, p99, max), refusals by reason
(each retried), shed (given up), how long until the backlog drained, the normal traffic's
waits meanwhile, and ownership moves during the load (overload that made health probes
fail would show there). Bounded: every wait has a ceiling; it stops only what it started.
Not part of CI: tests/scenarios/test_burst.py runs a small burst and asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from failover.chaos.demo import headless_command
from failover.chaos.report import summarize

SAMPLE_EVERY_S = 0.5
START_CEILING_S = 120.0
LOAD_CEILING_S = 300.0
STOP_CEILING_S = 180.0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
TARGET_RSS_MB = 300.0
TARGET_CPU_PERCENT_OF_2_VCPU = 5.0
VCPUS = 2
LOAD_SEED = 2


def label_of(argv: list[str]) -> str | None:
    """Which process of the run: ``a/site``, ``a/eap``, ``producer``, ``load``, ..."""
    options = dict(
        a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--") and "=" in a
    )
    if "demo" in argv:
        return "demo"
    if "produce" in argv:
        return "load" if options.get("seed") == str(LOAD_SEED) else "producer"
    if "logstore" in argv:
        return "logstore"
    if "component" in argv and "run" in argv:
        return f"{options.get('site')}/{options.get('component')}"
    if "site" in argv and "run" in argv:
        return f"{options.get('site')}/site"
    return None


def processes(run_dir: Path) -> dict[int, str]:
    """PID -> label of every live process of the run (its run directory in the command)."""
    found = {}
    needle = str(run_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            label = label_of([a.decode(errors="replace") for a in cmdline.split(b"\0")])
            if label is not None:
                found[int(proc.name)] = label
    return found


def status_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB; zeros when the process is gone."""
    values = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in values:
                values[words[0]] = int(words[1]) / 1024
    except (OSError, ValueError):
        pass
    return values["VmRSS:"], values["VmHWM:"]


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


class Peaks:
    """Peak memory per label (over every PID it had: a restarted process keeps its max)."""

    def __init__(self) -> None:
        self.rss_mb: dict[str, float] = {}
        self.hwm_mb: dict[str, float] = {}

    def sample(self, run_dir: Path) -> dict[int, str]:
        procs = processes(run_dir)
        for pid, label in procs.items():
            rss, hwm = status_mb(pid)
            self.rss_mb[label] = max(self.rss_mb.get(label, 0.0), rss)
            self.hwm_mb[label] = max(self.hwm_mb.get(label, 0.0), hwm)
        return procs

    def to_json(self) -> dict[str, dict[str, float]]:
        return {
            label: {"peak_rss_mb": round(rss, 1), "vm_hwm_mb": round(self.hwm_mb[label], 1)}
            for label, rss in sorted(self.rss_mb.items())
        }


def footprint_at_rest(run_dir: Path, rest_s: float) -> dict[str, Any]:
    """Per site: BFM's own process and the site's components, RSS (peak over the window)
    and CPU over ``rest_s`` seconds of the normal traffic."""
    peaks = Peaks()
    procs = peaks.sample(run_dir)
    before = {pid: cpu_ticks(pid) for pid in procs}
    started = time.monotonic()
    while time.monotonic() - started < rest_s:
        time.sleep(SAMPLE_EVERY_S)
        peaks.sample(run_dir)
    elapsed_s = time.monotonic() - started
    used: dict[str, int] = {}
    for pid, label in procs.items():
        used[label] = used.get(label, 0) + max(0, cpu_ticks(pid) - before[pid])
    sites: dict[str, Any] = {}
    for label, rss in peaks.rss_mb.items():
        site, _, component = label.partition("/")
        if not component:
            continue
        part = "bfm" if component == "site" else "components"
        group = sites.setdefault(site, {}).setdefault(part, {"rss_mb": 0.0, "cpu_s": 0.0})
        group["rss_mb"] += rss
        group["cpu_s"] += used.get(label, 0) / TICKS_PER_S
    for by_part in sites.values():
        for group in by_part.values():
            group["cpu_percent_of_2_vcpu"] = round(100 * group.pop("cpu_s") / elapsed_s / VCPUS, 2)
            group["rss_mb"] = round(group["rss_mb"], 1)
        bfm = by_part.get("bfm", {})
        by_part["within_target"] = (
            bfm.get("rss_mb", 0.0) <= TARGET_RSS_MB
            and bfm.get("cpu_percent_of_2_vcpu", 0.0) <= TARGET_CPU_PERCENT_OF_2_VCPU
        )
    return {
        "window_s": round(elapsed_s, 1),
        "target": {
            "rss_mb": TARGET_RSS_MB,
            "cpu_percent_of_2_vcpu": TARGET_CPU_PERCENT_OF_2_VCPU,
        },
        "sites": dict(sorted(sites.items())),
    }


def history_times(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(id -> first send, id -> first ack), wall-clock seconds."""
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    if not path.exists():
        return sent, acked
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("op") == "send":
            sent.setdefault(item["id"], item["t"])
        elif item.get("op") == "ack":
            acked.setdefault(item["id"], item["t"])
    return sent, acked


def waits_of(run_dir: Path) -> dict[str, Any]:
    """The load's waits and drain times, and the normal traffic's waits meanwhile."""
    sent, acked = history_times(run_dir / f"history-{LOAD_SEED}.jsonl")
    if not sent:
        return {}
    first_s, last_send_s = min(sent.values()), max(sent.values())
    last_ack_s = max(acked.values(), default=last_send_s)
    normal_sent, normal_acked = history_times(run_dir / "history-1.jsonl")
    meanwhile = [
        normal_acked[m] - t
        for m, t in normal_sent.items()
        if first_s <= t <= last_ack_s and m in normal_acked
    ]
    return {
        "load_wait_s": summarize(acked[m] - t for m, t in sent.items() if m in acked),
        "drained_after_first_send_s": round(last_ack_s - first_s, 3),
        "drained_after_last_send_s": round(last_ack_s - last_send_s, 3),
        "normal_traffic_wait_s_meanwhile": summarize(meanwhile),
        "_from_s": first_s,
    }


def moves_since(run_dir: Path, since_s: float) -> dict[str, int]:
    """Ownership decisions by kind after ``since_s`` (wall clock): a load that made health
    probes fail moves shards."""
    kinds: dict[str, int] = {}
    for path in run_dir.glob("site-*.log"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"decision"' not in line:
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if item.get("event") == "decision" and float(item.get("at_wall_s", 0)) > since_s:
                kind = str(item.get("kind"))
                kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def wait_for_traffic(run_dir: Path, demo: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    while time.monotonic() - started < START_CEILING_S:
        if demo.poll() is not None:
            sys.exit(f"burst: the demo ended early ({demo.returncode}); see {run_dir}")
        try:
            if json.loads((run_dir / "producer-stats.json").read_text())["acked"] > 0:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(SAMPLE_EVERY_S)
    sys.exit(f"burst: no traffic within {START_CEILING_S:.0f} s; see {run_dir}")


def load_command(run_dir: Path, case: str, args: argparse.Namespace) -> list[str]:
    common = [sys.executable, "-m", "failover", "produce", f"--run-dir={run_dir}"]
    common += [f"--seed={LOAD_SEED}", "--json"]
    if case == "burst":
        return [
            *common,
            "--rate=0",
            "--duration=0s",
            f"--burst={args.burst}",
            f"--max-in-flight={args.burst}",
        ]
    extra_rate = args.rate * (args.overload_factor - 1)
    return [*common, f"--rate={extra_rate:g}", f"--duration={args.overload_s:g}s"]


def one_case(root: Path, case: str, args: argparse.Namespace) -> dict[str, Any]:
    run_dir, report = root / case / "run", root / case / "report.json"
    run_dir.mkdir(parents=True)
    ceiling_s = START_CEILING_S + args.rest_s + LOAD_CEILING_S
    command = headless_command(
        "none",
        run_dir=run_dir,
        report=report,
        duration_s=ceiling_s,
        rate_per_s=args.rate,
        logstore=True,
    )
    demo_log = (root / case / "demo.log").open("wb")
    demo = subprocess.Popen(command, stdout=demo_log, stderr=subprocess.STDOUT)
    load: subprocess.Popen[bytes] | None = None
    try:
        wait_for_traffic(run_dir, demo)
        progress(f"{case}: traffic flows; {args.rest_s:g} s at rest")
        rest = footprint_at_rest(run_dir, args.rest_s)
        peaks = Peaks()
        with (root / case / "load.log").open("wb") as load_log:  # its delayed-message lines
            load = subprocess.Popen(
                load_command(run_dir, case, args), stdout=subprocess.PIPE, stderr=load_log
            )
        progress(f"{case}: load started")
        started = time.monotonic()
        while load.poll() is None and time.monotonic() - started < LOAD_CEILING_S:
            peaks.sample(run_dir)
            time.sleep(SAMPLE_EVERY_S)
        out = load.communicate(timeout=5)[0] if load.poll() is not None else b""
        peaks.sample(run_dir)
        progress(f"{case}: load done in {time.monotonic() - started:.1f} s; stopping the demo")
        for pid, label in processes(run_dir).items():
            if label == "producer":  # the demo's: it finishes, then the demo judges the run
                os.kill(pid, signal.SIGTERM)
        try:
            demo.wait(timeout=STOP_CEILING_S)
        except subprocess.TimeoutExpired:  # its producer did not finish: interrupt it
            progress(f"{case}: the demo's producer did not finish in {STOP_CEILING_S:.0f} s")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # it stops its processes and judges
            try:
                demo.wait(timeout=STOP_CEILING_S)
            except subprocess.TimeoutExpired:
                demo.kill()
        demo_log.close()
    return result(case, run_dir, report, rest, peaks, out, args)


def result(
    case: str,
    run_dir: Path,
    report: Path,
    rest: dict[str, Any],
    peaks: Peaks,
    load_out: bytes,
    args: argparse.Namespace,
) -> dict[str, Any]:
    judged = json.loads(report.read_text()) if report.exists() else {}
    try:
        load = json.loads(load_out)
    except ValueError:
        load = {}
    waits = waits_of(run_dir)
    from_s = waits.pop("_from_s", time.time())
    offered = (
        args.burst
        if case == "burst"
        else round(args.rate * (args.overload_factor - 1) * args.overload_s)
    )
    return {
        "case": case,
        "offered": offered,
        "total_rate_per_s": None if case == "burst" else args.rate * args.overload_factor,
        "load": {
            "sent": load.get("sent"),
            "acked": load.get("acked"),
            "held_back_by_window": None if not load else offered - load.get("sent", 0),
            "refused_and_retried": load.get("refused"),
            "shed_given_up": load.get("given_up"),
            "max_wait_s": load.get("max_wait_s"),
        },
        **waits,
        "normal_traffic_refused": (judged.get("producer") or {}).get("refused"),
        "acked_lost": judged.get("acked_lost"),
        "unacknowledged": judged.get("unacknowledged"),
        "violations": judged.get("violations"),
        "ownership_moves_during_load": moves_since(run_dir, from_s),
        "peak_memory_mb": peaks.to_json(),
        "footprint_at_rest": rest,
    }


def progress(text: str) -> None:
    print(f"burst: {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="burst,overload", help="burst, overload or both")
    parser.add_argument("--burst", type=int, default=10_000, help="Messages at once.")
    parser.add_argument("--rate", type=float, default=150.0, help="The normal rate, msg/s.")
    parser.add_argument("--overload-factor", type=float, default=10.0)
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--rest-s", type=float, default=10.0, help="Footprint window.")
    parser.add_argument("--keep", help="Keep the runs' directories under this directory.")
    parser.add_argument("--json", action="store_true", help="Only the JSON report on stdout.")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if not cases or set(cases) - {"burst", "overload"}:
        parser.error("--cases takes burst, overload or burst,overload")
    results = []
    with tempfile.TemporaryDirectory(prefix="bfm-burst-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for case in cases:
            results.append(one_case(root, case, args))
            if not args.json:
                progress(json.dumps(results[-1]))
    summary = {
        "cases": results,
        "acked_lost": sum(r["acked_lost"] or 0 for r in results),
        "all_judged": all(r["acked_lost"] is not None for r in results),
    }
    print(json.dumps(summary, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
