"""What serving the grants over HTTP costs a site: one site process's grants server and the
component pods of a worker site asking it ten times a second each (real HTTP on 127.0.0.1).

    python benchmarks/grants_http.py --pods 6 --seconds 10 [--tls]

Reported (JSON): questions answered per second, errors, the CPU the server and the askers
used together (seconds and share of one core: an upper bound for the site process), and
the round trip of one question (median, p99, max): the part of each grant a component
gives up, since it counts a grant from when it asked. Not part of CI: it measures, tests
assert (tests/unit/test_grants_http.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from failover.adapters.tls_dev import write_dev_pki
from failover.runtime.grants import Grants
from failover.runtime.grants_http import GrantsBoard, GrantsFetcher, GrantsServer


class TimedFetcher(GrantsFetcher):
    """A fetcher that keeps how long each question took."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.round_trips_s: list[float] = []
        self._times_lock = threading.Lock()

    def fetch_once(self) -> bool:
        started_s = time.monotonic()
        answered = super().fetch_once()
        if answered:
            with self._times_lock:
                self.round_trips_s.append(time.monotonic() - started_s)
        return answered


def run(pods: int, seconds: float, *, tls: bool) -> dict[str, object]:
    board = GrantsBoard()
    shards = {(c, i): 1 for c in ("aam", "backbone", "eap", "eep", "gsm", "msm") for i in range(16)}
    board.publish(Grants("a", 1, time.monotonic() + seconds + 60.0, shards))
    with tempfile.TemporaryDirectory() as tmp:
        files = write_dev_pki(Path(tmp), addresses=("127.0.0.1",)) if tls else None
        server = GrantsServer(
            board,
            bind=("127.0.0.1", 0),
            monotonic=time.monotonic,
            tls=files.server_context() if files else None,
        )
        host, port = server.start()
        url = f"{server.scheme}://{host}:{port}/grants"
        fetchers = [
            TimedFetcher(
                url, monotonic=time.monotonic, tls=files.client_context() if files else None
            )
            for _ in range(pods)
        ]
        cpu_start_s, wall_start_s = time.process_time(), time.monotonic()
        for fetcher in fetchers:
            fetcher.start()
        time.sleep(seconds)
        for fetcher in fetchers:
            fetcher.stop()
        cpu_s = time.process_time() - cpu_start_s
        wall_s = time.monotonic() - wall_start_s
        server.close()
    trips = sorted(t for f in fetchers for t in f.round_trips_s)
    answered = sum(f.fetches for f in fetchers)
    return {
        "pods": pods,
        "tls": tls,
        "seconds": round(wall_s, 2),
        "questions_per_s": round(answered / wall_s, 1),
        "errors": sum(f.errors for f in fetchers),
        "cpu_s": round(cpu_s, 3),
        "cpu_share_of_one_core": round(cpu_s / wall_s, 4),
        "round_trip_ms": {
            "median": round(statistics.median(trips) * 1000, 3) if trips else None,
            "p99": round(trips[int(0.99 * (len(trips) - 1))] * 1000, 3) if trips else None,
            "max": round(trips[-1] * 1000, 3) if trips else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=6, help="components asking (default 6)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--tls", action="store_true", help="mutual TLS, as with BFM_TLS_*")
    args = parser.parse_args()
    if args.pods < 1 or not 0 < args.seconds <= 600:
        parser.error("--pods must be at least 1 and --seconds within (0, 600]")
    print(json.dumps(run(args.pods, args.seconds, tls=args.tls), indent=2))


if __name__ == "__main__":
    main()
