"""Writers for the Redis Sentinel baseline, run inside the clients' namespace (``c``).

``python -m failover.chaos.sentinel_writer --sentinel HOST:PORT ... --history PATH``
starts one thread per client kind and stops by itself after ``--duration-s`` (or at
SIGTERM). Every write is a SET of a unique key ``bfm:<client>-<seq>`` whose value is its
id. Both kinds use redis-py's ``redis.sentinel.Sentinel``: a connection of a Sentinel
managed pool asks the sentinels for the master each time it (re)connects, and keeps its
socket until an error.

- ``reconnecting``: ``socket_timeout`` 0.5 s; a write that errors or times out drops the
  connection, so the next write asks Sentinel for the master again. Measures the time
  until writes succeed again.
- ``sticky``: redis-py's default, no socket timeout. It keeps its established connection
  to the primary, as many applications do: a write to a paused primary waits for it, and
  after SIGCONT the old primary acknowledges it (and the next ones) until Sentinel demotes
  it (READONLY, which redis-py turns into a reconnect).

History: one JSON object per line, flushed at once:
``{"op":"send","id":..,"key":..,"t":wall,"client":..}``, then
``{"op":"ack","id":..,"t":wall,"client":..,"server":"host:port"}`` (the server the
connection that got the reply was connected to) or ``{"op":"fail",..,"error":..}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

CLIENT_KINDS: tuple[str, ...] = ("reconnecting", "sticky")
RECONNECTING_TIMEOUT_S = 0.5
SENTINEL_TIMEOUT_S = 0.5  # a sentinel that does not answer in this is skipped
KEY_PREFIX = "bfm:"
JOIN_GRACE_S = 1.0
MAX_ERROR_CHARS = 200


def key_of(write_id: str) -> str:
    """The Redis key a write id is stored under."""
    return f"{KEY_PREFIX}{write_id}"


class HistoryFile:
    """Appends JSON lines from several threads; each line is flushed; closed lines drop."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def master_connection(
    sentinels: Sequence[tuple[str, int]], master_name: str, *, socket_timeout_s: float | None
) -> Any:
    """One connection of a Sentinel managed pool (redis-py's ``SentinelManagedConnection``):
    it asks the sentinels for the master whenever it (re)connects, on first use. redis-py's
    sentinel module is unannotated, hence ``Any`` and the ignores."""
    # redis-py's clients retry a failed call 10 times with backoff by default: a
    # sentinel cut off from c would then cost seconds per discovery. One try each.
    sentinel_kwargs = {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        master_name,
        sentinel,
        is_master=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),  # every attempt is recorded: no hidden retries
    )
    return pool.make_connection()  # not connected yet: run_client connects it


def run_client(
    kind: str,
    sentinels: Sequence[tuple[str, int]],
    master_name: str,
    history: HistoryFile,
    stop: threading.Event,
    *,
    rate_per_s: float,
    max_writes: int,
) -> None:
    """Write until ``stop`` is set (at most ``max_writes``), one attempt every 1/rate s
    (never faster)."""
    socket_timeout_s = RECONNECTING_TIMEOUT_S if kind == "reconnecting" else None
    conn = master_connection(sentinels, master_name, socket_timeout_s=socket_timeout_s)
    interval_s = 1.0 / rate_per_s
    for seq in range(1, max_writes + 1):
        if stop.is_set():
            break
        began = time.monotonic()
        write_id = f"{kind}-{seq}"
        history.append(
            {
                "op": "send",
                "id": write_id,
                "key": key_of(write_id),
                "t": time.time(),
                "client": kind,
            }
        )
        try:
            # connect() explicitly: it is the method that asks Sentinel (a no-op while
            # connected); the lazy connect inside send_command would bypass Sentinel.
            conn.connect()
            conn.send_command("SET", key_of(write_id), write_id)
            conn.read_response()
        except (RedisError, OSError) as exc:
            conn.disconnect()  # the next write asks Sentinel for the master again
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            history.append(
                {"op": "fail", "id": write_id, "t": time.time(), "client": kind, "error": error}
            )
        else:
            server = f"{conn.host}:{conn.port}"
            history.append(
                {"op": "ack", "id": write_id, "t": time.time(), "client": kind, "server": server}
            )
        stop.wait(max(0.0, interval_s - (time.monotonic() - began)))


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sentinel", type=_address, action="append", required=True)
    parser.add_argument("--master-name", default="bfm")
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--rate-per-s", type=float, default=50.0)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--clients", default=",".join(CLIENT_KINDS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kinds = [k for k in args.clients.split(",") if k]
    unknown = sorted(set(kinds) - set(CLIENT_KINDS))
    if unknown or not kinds:
        raise SystemExit(f"--clients: unknown {unknown}; use some of {','.join(CLIENT_KINDS)}")
    if args.duration_s <= 0 or args.rate_per_s <= 0:
        raise SystemExit("--duration-s and --rate-per-s must be > 0")
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    history = HistoryFile(args.history)
    max_writes = int(args.duration_s * args.rate_per_s) + 1
    threads = [
        threading.Thread(
            target=run_client,
            args=(kind, args.sentinel, args.master_name, history, stop),
            kwargs={"rate_per_s": args.rate_per_s, "max_writes": max_writes},
            name=f"writer-{kind}",
            daemon=True,  # a sticky write blocked on a paused server must not keep us alive
        )
        for kind in kinds
    ]
    for thread in threads:
        thread.start()
    stop.wait(args.duration_s)
    stop.set()
    for thread in threads:
        thread.join(JOIN_GRACE_S)
    history.close()  # a write still blocked records nothing more
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
