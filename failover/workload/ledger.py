"""A module's ledger: every message it applied, durable before the ack, deduplicated by id.

SQLite in WAL mode with ``synchronous=FULL``: a batch is on disk when ``apply`` returns,
so a message acknowledged after it survives kill -9 of any process. Batches amortise the
fsync (group commit). A message id seen before is not applied again (retries are safe).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from failover.workload.envelope import Envelope

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    shard INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    site TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class LedgerRow:
    id: str
    component: str
    shard: int
    epoch: int
    site: str
    applied_at: float


class LedgerError(Exception):
    """The ledger could not record a batch; nothing of it may be acknowledged."""


class GrantExpired(Exception):
    """The batch was rolled back: the writer's grant ran out before the commit."""


class Ledger:
    """One module instance's ledger file."""

    def __init__(self, path: Path, *, site: str) -> None:
        self.path, self.site = path, site
        if not path.parent.is_dir():
            raise LedgerError(f"bfm: the ledger directory {path.parent} does not exist")
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as err:
            raise LedgerError(f"bfm: cannot open the ledger {path} ({err})") from None
        self._lock = threading.Lock()

    def apply(
        self,
        envelopes: Sequence[Envelope],
        *,
        applied_at: float | Callable[[], float],
        before_commit: Callable[[], bool] | None = None,
    ) -> list[bool]:
        """Record a batch in one transaction; per message True if new, False if a duplicate.

        ``before_commit`` is asked inside the transaction, just before the rows are written
        and committed: False rolls the batch back and raises ``GrantExpired`` (the writer's
        right ran out while it worked). ``applied_at`` (a time, or a clock asked right
        after that check) is stamped on the rows: with a clock it is the moment of the
        commit, which is what the checker judges a late write by. Raises ``LedgerError``
        (and records nothing) when the disk refuses the write.
        """
        results = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if before_commit is not None and not before_commit():
                    self._db.execute("ROLLBACK")
                    raise GrantExpired(f"the grant ran out before the commit to {self.path}")
                at_s = applied_at() if callable(applied_at) else applied_at
                for env in envelopes:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                        (env.id, env.component, env.shard, env.epoch, self.site, at_s),
                    )
                    results.append(cursor.rowcount == 1)
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                with contextlib.suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                raise LedgerError(f"bfm: cannot record to the ledger {self.path} ({err})") from None
        return results

    def rows(self) -> Iterator[LedgerRow]:
        with self._lock:
            fetched = self._db.execute(
                "SELECT id, component, shard, epoch, site, applied_at FROM messages ORDER BY rowid"
            ).fetchall()
        for row in fetched:
            yield LedgerRow(*row)

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
