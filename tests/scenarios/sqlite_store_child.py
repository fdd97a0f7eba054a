"""Child process for test_sqlite_multiprocess.py: hammers one sqlite store document.

    python sqlite_store_child.py increment DB_PATH KEY COUNT
        print "ready", wait for a line on stdin (the start signal), then add 1 to KEY's
        "count" COUNT times by compare-and-set, retrying on Conflict; print each committed
        count, and finally "conflicts N" (how many compare-and-sets it lost).
    python sqlite_store_child.py write-loop DB_PATH KEY
        rewrite KEY forever as {"n": n, "pad": padding(n)}, n counting up from the stored
        value; print each committed n. The parent kills it with SIGKILL.

Every printed line is flushed only after its write committed, so the parent knows that
each printed value was durable. Any OutcomeUnknown or StoreUnavailable ends the child
with a traceback and a non-zero exit, which fails the test.
"""

from __future__ import annotations

import random
import sys
import time

from failover.adapters.sqlite_store import SqliteStore
from failover.ports import Conflict

RACE_WINDOW_S = 0.002
PAD_REPEAT = 4096  # 8 characters x 4096 = 32 KiB per write: a torn write would show


def padding(n: int) -> str:
    """The padding a document with counter ``n`` must carry (the parent checks it)."""
    return f"{n:08d}" * PAD_REPEAT


def increment(store: SqliteStore, key: str, count: int) -> None:
    print("ready", flush=True)
    sys.stdin.readline()
    done = conflicts = 0
    while done < count:
        current = store.get(key)
        assert current is not None, f"{key} is missing"
        value = current.value["count"] + 1
        time.sleep(random.uniform(0, RACE_WINDOW_S))  # widen the read-to-write race
        try:
            store.compare_and_set(key, {"count": value}, expected_revision=current.revision)
        except Conflict:
            conflicts += 1
            continue
        print(value, flush=True)
        done += 1
    print("conflicts", conflicts, flush=True)


def write_loop(store: SqliteStore, key: str) -> None:
    current = store.get(key)
    assert current is not None, f"{key} is missing"
    n, revision = current.value["n"], current.revision
    while True:
        n += 1
        revision = store.compare_and_set(
            key, {"n": n, "pad": padding(n)}, expected_revision=revision
        )
        print(n, flush=True)


def main(argv: list[str]) -> None:
    mode, db_path, key = argv[1], argv[2], argv[3]
    store = SqliteStore(db_path, busy_timeout_s=30.0)
    if mode == "increment":
        increment(store, key, int(argv[4]))
    elif mode == "write-loop":
        write_loop(store, key)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    store.close()


if __name__ == "__main__":
    main(sys.argv)
