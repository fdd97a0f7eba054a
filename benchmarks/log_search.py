"""How fast the embedded log store ingests and finds lines, beside ``grep -F`` over the same
lines, measured in one run.

    python benchmarks/log_search.py --lines 10000000 --json

It starts ``bfm logstore serve`` (a real process, its own SQLite file), generates
``--lines`` JSON log lines across 8 components and 3 sites (with levels: 48 streams) over
the last 24 hours, each with a trace id as structured metadata (about 8 lines per trace),
pushes them over HTTP in Loki's protobuf+snappy format (``--batch`` lines a request),
and writes the same lines as JSONL for grep. Then, through the HTTP API (query_range,
newest first, limit 100), ``--repeat`` times each:

- a trace-id lookup (``{namespace="hemisphere"} | trace_id="..."``, a different id each
  time), target p99 <= 10 ms;
- a rare word (0.001 % of lines) and a common word (1 %) (``|= "word"``), target
  p99 <= 200 ms;
- ``sum by (site) (count_over_time({namespace="hemisphere"}[1h]))`` at now (instant);

and ``grep -F`` over the JSONL for the same trace id and words (three runs each, the
median: grep has no index; it reads every byte each time). Disk bytes per line from the
store's files. Not part of CI: it measures, tests assert.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bfm_observe.logstore.records import DEFAULT_TENANT, LogRecord
from bfm_observe.logstore.wire_loki import encode_loki_protobuf
from failover.chaos.logstore_process import LogStoreProcess

COMPONENTS = ("backbone", "eap", "eep", "aam", "msm", "gsm", "bfm-site", "producer")
SITES = ("a", "b", "w")
LEVELS = ("info", "warning")
RARE_WORD, RARE_EVERY = "zebracorn", 100_000  # 0.001 %
COMMON_WORD, COMMON_EVERY = "failover", 100  # 1 %
LINES_PER_TRACE = 8
SPAN_S = 24 * 3600.0


def _line(i: int, rng: random.Random, ts_s: float, trace_id: str, component: str) -> str:
    words = ["message", f"m{i}", "applied", "under", "epoch", str(rng.randint(1, 99))]
    if i % RARE_EVERY == RARE_EVERY // 2:
        words.append(RARE_WORD)
    if i % COMMON_EVERY == COMMON_EVERY // 3:
        words.append(COMMON_WORD)
    doc = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_s)),
        "level": "info",
        "logger": f"bfm.{component}",
        "msg": " ".join(words),
        "trace_id": trace_id,
    }
    return json.dumps(doc, separators=(",", ":"))


def generate(lines: int, seed: int, now_s: float) -> Any:
    """Batches of records, in time order, the trace ids used, and the JSONL text per batch."""
    rng = random.Random(seed)
    start_s = now_s - SPAN_S
    trace_id = ""
    for i in range(lines):
        if i % LINES_PER_TRACE == 0:
            trace_id = f"{rng.getrandbits(128):032x}"
        ts_s = start_s + SPAN_S * i / lines
        component, site = COMPONENTS[i % len(COMPONENTS)], SITES[(i // 7) % len(SITES)]
        level = LEVELS[1] if i % 50 == 0 else LEVELS[0]
        labels = {"namespace": "hemisphere", "site": site, "component": component, "level": level}
        yield LogRecord(
            DEFAULT_TENANT,
            labels,
            int(ts_s * 1e9),
            _line(i, rng, ts_s, trace_id, component),
            {"trace_id": trace_id},
        )


def ingest(
    url: str, lines: int, batch: int, jsonl: Path, seed: int, now_s: float
) -> dict[str, Any]:
    session = requests.Session()
    pending: list[LogRecord] = []
    traces: list[str] = []
    push_s = 0.0
    started_s = time.perf_counter()
    with jsonl.open("w", encoding="utf-8") as out:
        for n, record in enumerate(generate(lines, seed, now_s), 1):
            pending.append(record)
            if (n - 1) % LINES_PER_TRACE == 0 and len(traces) < 100_000:
                traces.append(record.metadata["trace_id"])
            if len(pending) == batch or n == lines:
                out.write("\n".join(r.line for r in pending) + "\n")
                body = encode_loki_protobuf(pending)
                t0 = time.perf_counter()
                answer = session.post(
                    url + "/loki/api/v1/push",
                    data=body,
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=120,
                )
                push_s += time.perf_counter() - t0
                if answer.status_code != 204:
                    raise SystemExit(f"push failed: {answer.status_code} {answer.text[:200]}")
                pending = []
                if n % (batch * 100) == 0:
                    print(f"log_search: pushed {n} of {lines} lines", file=sys.stderr)
    total_s = time.perf_counter() - started_s
    return {
        "lines": lines,
        "push_s": round(push_s, 3),
        "ingest_lines_per_s": round(lines / push_s),
        "total_s_with_generation": round(total_s, 3),
        "traces": traces,
    }


def _timed_query(session: requests.Session, url: str, params: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    answer = session.get(url, params=params, timeout=120)
    elapsed_s = time.perf_counter() - t0
    if answer.status_code != 200:
        raise SystemExit(f"query failed: {answer.status_code} {answer.text[:200]}")
    result = answer.json()["data"]["result"]
    found = sum(len(s.get("values", [])) for s in result) or len(result)
    return elapsed_s, found


def _summary(times_s: list[float], found: list[int]) -> dict[str, Any]:
    ordered = sorted(times_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(times_s),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "results_min": min(found),
        "results_max": max(found),
    }


def _grep_s(needle: str, jsonl: Path) -> float:
    """``grep -F needle`` over the JSONL, its output read (to /dev/null GNU grep stops at
    the first match, which no search for "the newest 100" can do)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(
            ["grep", "-F", needle, str(jsonl)],
            stdout=subprocess.PIPE,
            check=False,
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sampled(jsonl: Path, count: int, seed: int) -> tuple[float, list[str]]:
    """For ``--reuse``: the time of the newest line and trace ids read at random offsets."""
    size_bytes = jsonl.stat().st_size
    rng = random.Random(seed)
    traces: list[str] = []
    with jsonl.open("rb") as lines:
        lines.seek(max(0, size_bytes - 4096))
        newest = json.loads(lines.read().splitlines()[-1])
        while len(traces) < count:
            lines.seek(rng.randrange(size_bytes))
            lines.readline()  # the rest of a line cut by the seek
            text = lines.readline()
            if text:
                traces.append(json.loads(text)["trace_id"])
    newest_s = calendar.timegm(time.strptime(newest["ts"], "%Y-%m-%dT%H:%M:%S"))
    return newest_s + 1.0, traces


def search(url: str, traces: list[str], repeat: int, now_s: float, jsonl: Path) -> dict[str, Any]:
    session = requests.Session()
    rng = random.Random(7)
    query_range = url + "/loki/api/v1/query_range"
    window = {"start": str(int((now_s - SPAN_S - 60) * 1e9)), "end": str(int((now_s + 60) * 1e9))}
    base = {**window, "limit": "100", "direction": "backward"}
    selector = '{namespace="hemisphere"}'
    cases = {
        "trace_id": lambda: f'{selector} | trace_id="{rng.choice(traces)}"',
        "rare_word": lambda: f'{selector} |= "{RARE_WORD}"',
        "common_word": lambda: f'{selector} |= "{COMMON_WORD}"',
    }
    report: dict[str, Any] = {}
    for name, make in cases.items():
        _timed_query(session, query_range, {**base, "query": make()})  # warm
        times, found = [], []
        for _ in range(repeat):
            elapsed_s, n = _timed_query(session, query_range, {**base, "query": make()})
            times.append(elapsed_s)
            found.append(n)
        report[name] = _summary(times, found)
    count_query = {
        "query": f"sum by (site) (count_over_time({selector}[1h]))",
        "time": str(int(now_s * 1e9)),
    }
    times, found = [], []
    for _ in range(max(3, repeat // 10)):
        elapsed_s, n = _timed_query(session, url + "/loki/api/v1/query", count_query)
        times.append(elapsed_s)
        found.append(n)
    report["count_over_time_1h"] = _summary(times, found)
    grep = {
        "trace_id": _grep_s(traces[len(traces) // 2], jsonl),
        "rare_word": _grep_s(RARE_WORD, jsonl),
        "common_word": _grep_s(COMMON_WORD, jsonl),
    }
    for name, grep_s in grep.items():
        report[name]["grep_s"] = round(grep_s, 3)
        report[name]["grep_over_store_p50"] = round(grep_s * 1000 / report[name]["p50_ms"], 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="search the store and JSONL already in --dir (from a run with the same --lines)",
    )
    args = parser.parse_args()
    if args.lines < 1000:
        parser.error("--lines must be at least 1000")
    work = args.dir or Path(tempfile.mkdtemp(prefix="bfm-log-search-"))
    work.mkdir(parents=True, exist_ok=True)
    data, jsonl = work / "logs.db", work / "lines.jsonl"
    now_s = time.time()
    if args.reuse and not (data.exists() and jsonl.exists()):
        parser.error(f"--reuse: no logs.db and lines.jsonl in {work}")
    serve = LogStoreProcess(work, max_disk="100GB", retention="30d")  # work/logs.db
    url = serve.start()
    try:
        report: dict[str, Any] = {}
        if args.reuse:
            now_s, traces = sampled(jsonl, 1000, args.seed)
            report["ingest"] = {"lines": args.lines, "reused": str(work)}
        else:
            ingested = ingest(url, args.lines, args.batch, jsonl, args.seed, now_s)
            traces = ingested.pop("traces")
            report["ingest"] = ingested
        report["queries"] = search(url, traces, args.repeat, now_s, jsonl)
    finally:
        serve.stop()
    disk_bytes = sum(p.stat().st_size for p in work.glob("logs.db*"))
    report["disk"] = {
        "store_bytes": disk_bytes,
        "bytes_per_line": round(disk_bytes / args.lines, 1),
        "jsonl_bytes": jsonl.stat().st_size,
        "jsonl_bytes_per_line": round(jsonl.stat().st_size / args.lines, 1),
    }
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, figures in report["queries"].items():
            print(f"{name}: {figures}")
        print(f"ingest: {report['ingest']}; disk: {report['disk']}")


if __name__ == "__main__":
    main()
