"""What telemetry costs the backbone: throughput, latency and CPU with telemetry off, at
the default sampling ratio, and at 100 % sampling, measured in the same run.

    python benchmarks/telemetry_overhead.py --json

Each trial is one `bfm demo --headless` run without faults (three sites, routers, six
modules per worker site, a producer), with the processes' telemetry set by environment:

- ``off``: ``BFM_TELEMETRY=off``: no process calls ``bfm_observe.configure`` (no tracer
  provider, no metrics server, no JSON-log shipping; the metric objects still count, as
  they cost a few hundred nanoseconds and cannot be left out without a build switch);
- ``default``: telemetry on, spans exported over OTLP/HTTP to a local collector double
  (an HTTP server that answers 200 and counts the bytes, as a collector's receiver would),
  sampling at ``bfm_observe.tracing.DEFAULT_SAMPLE_RATIO`` (alarms always);
- ``ratio-0.1``: the same with ``OTEL_TRACES_SAMPLER_ARG=0.1``;
- ``full``: the same with ``OTEL_TRACES_SAMPLER_ARG=1.0``.

``--mix`` sets the producer's kinds of message: ``field`` (default: mostly events and
status, 2 % alarms, as a site's backbone in operation) or ``uniform`` (each kind a sixth:
a sixth of the traffic is alarms, all sampled whatever the ratio: the worst case).

Modes are interleaved (off, default, full, off, ...) so drift on a shared machine hits
them alike. Two loads per trial: ``--rate`` (a steady load the system carries: the cost
shows as CPU seconds per 1000 messages, which at saturation is what limits throughput)
and ``--saturate`` (about what it carries: the achieved acknowledgements per second are
its throughput). Far beyond that, a busy router misses health probes and the controller
moves shards away (``ownership_moves`` counts the decisions after the initial placement):
the figures then measure those failovers, not telemetry. Latency (first send to
acknowledgement, retries included) from the producer's history. CPU: every process of the
run (/proc), over the steady middle of the traffic, so start-up (imports) is left out.
Not part of CI: it measures, tests assert.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from bfm_observe.tracing import DEFAULT_SAMPLE_RATIO
from failover.chaos.demo import headless_command
from failover.chaos.report import summarize

MODES = ("off", "default", "ratio-0.1", "full")


class _Sink(BaseHTTPRequestHandler):
    """The collector double: accepts OTLP/HTTP posts, counts them, answers 200."""

    received: ClassVar[dict[str, int]] = {"requests": 0, "bytes": 0}

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        _Sink.received["requests"] += 1
        _Sink.received["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def mode_env(mode: str, sink_url: str) -> dict[str, str]:
    if mode == "off":
        return {"BFM_TELEMETRY": "off"}
    env = {"BFM_TELEMETRY": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url}
    if mode == "full":
        env["OTEL_TRACES_SAMPLER_ARG"] = "1.0"
    elif mode.startswith("ratio-"):
        env["OTEL_TRACES_SAMPLER_ARG"] = mode.removeprefix("ratio-")
    return env


def latencies_s(run_dir: Path) -> list[float]:
    """First send to first acknowledgement of every acknowledged message."""
    sent: dict[str, float] = {}
    waits: list[float] = []
    for path in run_dir.glob("history*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                op = json.loads(line)
            except ValueError:
                continue
            if op.get("op") == "send":
                sent.setdefault(op["id"], op["t"])
            elif op.get("op") == "ack" and op["id"] in sent:
                waits.append(op["t"] - sent.pop(op["id"]))
    return sorted(waits)


def moves(run_dir: Path) -> int:
    """Ownership decisions once traffic flowed (the first send): a run without faults has
    none unless overload made health probes fail (then throughput measures failovers)."""
    first_send_s = min(
        (
            json.loads(line)["t"]
            for path in run_dir.glob("history*.jsonl")
            for line in path.read_text().splitlines()[:1]
            if line.startswith("{")
        ),
        default=float("inf"),
    )
    count = 0
    for path in run_dir.glob("site-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"event": "decision"' not in line:
                continue
            try:
                at_s = float(json.loads(line).get("at_wall_s", 0.0))
            except ValueError:
                continue
            count += at_s > first_send_s
    return count


GROUPS = ("producer", "backbone", "bfm-site")


def run_ticks(run_dir: Path) -> dict[str, int]:
    """CPU clock ticks (user + system) used so far by the run's processes, per group: the
    producer (the load generator), the backbone (routers and modules) and the BFM site
    processes."""
    ticks = dict.fromkeys(GROUPS, 0)
    needle = str(run_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if needle not in cmdline:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        argv = cmdline.split(b"\0")
        if b"produce" in argv:
            group = "producer"
        elif b"component" in argv:
            group = "backbone"
        elif b"site" in argv:
            group = "bfm-site"
        else:
            continue  # the demo's own process
        ticks[group] += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def acked_so_far(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "producer-stats.json").read_text())["acked"])
    except (OSError, ValueError, KeyError):
        return None


def trial(
    mode: str, *, rate: int, duration_s: int, work: Path, sink_url: str, mix: str
) -> dict[str, Any]:
    """One run; CPU and acknowledgements are measured over the steady middle of the
    traffic (from 2 s after it starts to 2 s before it ends: start-up excluded)."""
    run_dir = work / f"{mode}-{rate}-{time.monotonic_ns()}"
    report = run_dir.with_suffix(".json")
    started = time.monotonic()
    demo = subprocess.Popen(
        headless_command(
            "none",
            run_dir=run_dir,
            report=report,
            duration_s=duration_s,
            rate_per_s=rate,
            mix=mix,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **mode_env(mode, sink_url)},
    )
    window: list[tuple[float, dict[str, int], int]] = []  # (monotonic s, ticks, acked)
    traffic_s: float | None = None
    while demo.poll() is None and time.monotonic() - started < 600:
        acked = acked_so_far(run_dir)
        now = time.monotonic()
        if acked is not None and traffic_s is None:
            traffic_s = now
        if traffic_s is not None and 2.0 <= now - traffic_s <= duration_s - 2.0:
            window.append((now, run_ticks(run_dir), acked or 0))
        time.sleep(0.25)
    demo.wait(timeout=60)
    data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    cores = cpu_s_per_1000 = None
    per_group: dict[str, float | None] = dict.fromkeys(GROUPS)
    if len(window) >= 2:
        (t0, ticks0, acked0), (t1, ticks1, acked1) = window[0], window[-1]
        tick_s = 1 / os.sysconf("SC_CLK_TCK")
        used_s = {g: (ticks1[g] - ticks0[g]) * tick_s for g in GROUPS}
        cpu_s = sum(used_s.values())
        cores = round(cpu_s / (t1 - t0), 3)
        if acked1 > acked0:
            cpu_s_per_1000 = round(1000 * cpu_s / (acked1 - acked0), 3)
            per_group = {g: round(1000 * used_s[g] / (acked1 - acked0), 3) for g in GROUPS}
    acked = int(data.get("acked", 0))
    return {
        "ok": demo.returncode == 0,
        "acked": acked,
        "acked_per_s": round(acked / duration_s, 1),
        "latency_s": summarize(latencies_s(run_dir)),
        "cpu_cores": cores,
        "cpu_s_per_1000": cpu_s_per_1000,
        "cpu_s_per_1000_by_group": per_group,
        "ownership_moves": moves(run_dir),
        "wall_s": round(time.monotonic() - started, 1),
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float:
        values = [r[key] for r in runs if r[key] is not None]
        return round(sum(values) / len(values), 3) if values else 0.0

    return {
        "trials": len(runs),
        "failed_trials": sum(1 for r in runs if not r["ok"]),
        "trials_with_ownership_moves": sum(1 for r in runs if r["ownership_moves"]),
        "acked_per_s": mean("acked_per_s"),
        "cpu_s_per_1000": mean("cpu_s_per_1000"),
        "cpu_s_per_1000_by_group": {
            g: round(sum(r["cpu_s_per_1000_by_group"][g] or 0 for r in runs) / len(runs), 3)
            for g in GROUPS
        },
        "latency_p50_s": round(sum(r["latency_s"]["p50"] for r in runs) / len(runs), 4),
        "latency_p99_s": round(sum(r["latency_s"]["p99"] for r in runs) / len(runs), 4),
        "runs": runs,
    }


def cost(results: dict[str, Any], mode: str) -> dict[str, float | None]:
    """The mode's cost against ``off`` in this run: fractions (0.03 = 3 %)."""
    off, on = results["off"], results[mode]

    def rel(key: str, worse_is_higher: bool) -> float | None:
        if not off[key]:
            return None
        change = (on[key] - off[key]) / off[key]
        return round(change if worse_is_higher else -change, 4)

    return {
        "throughput_cost": rel("acked_per_s", worse_is_higher=False),
        "cpu_per_message_cost": rel("cpu_s_per_1000", worse_is_higher=True),
        "p99_latency_change": rel("latency_p99_s", worse_is_higher=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="trials per mode and load")
    parser.add_argument("--rate", type=int, default=2000, help="steady load, messages/s")
    parser.add_argument("--saturate", type=int, default=8000, help="overload, messages/s")
    parser.add_argument(
        "--mix",
        default="field",
        help="the producer's kinds (field: 2 %% alarms, always sampled; uniform: a sixth)",
    )
    parser.add_argument("--duration", type=int, default=12, help="seconds of traffic per run")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{server.server_address[1]}"
    loads = {"steady": args.rate, "saturated": args.saturate}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        load: {m: [] for m in MODES} for load in loads
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bfm-bench-") as tmp:
            for _ in range(args.trials):
                for load, rate in loads.items():
                    for mode in MODES:
                        result = trial(
                            mode,
                            rate=rate,
                            duration_s=args.duration,
                            work=Path(tmp),
                            sink_url=sink_url,
                            mix=args.mix,
                        )
                        runs[load][mode].append(result)
                        if not args.json:
                            print(load, mode, json.dumps(result), file=sys.stderr)
    finally:
        server.shutdown()
    report: dict[str, Any] = {
        "benchmark": "telemetry_overhead",
        "default_sample_ratio": DEFAULT_SAMPLE_RATIO,
        "mix": args.mix,
        "duration_s": args.duration,
        "collector_double": dict(_Sink.received),
        "loads": {},
    }
    for load, rate in loads.items():
        results = {m: combine(runs[load][m]) for m in MODES}
        report["loads"][load] = {
            "offered_per_s": rate,
            "results": results,
            "cost_vs_off": {m: cost(results, m) for m in MODES if m != "off"},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
