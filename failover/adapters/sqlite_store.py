"""SQLite coordination store (``sqlite:///abs/path``): the embedded default, safe across processes.

One file on one host: WAL journal, ``synchronous=FULL`` (a commit is on disk before it
returns), every write in a ``BEGIN IMMEDIATE`` transaction, so compare-and-set is atomic
across processes and a process killed at any point leaves either the whole write or none.
Revisions come from a one-row counter table bumped inside the same transaction, so they
never repeat, even for a key deleted and created again. ``wait_for_change`` polls.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TypeVar

from failover.adapters.memory_store import decode_document, encode_document
from failover.adapters.polling import poll_for_change
from failover.ports import (
    Conflict,
    JsonDoc,
    OutcomeUnknown,
    StoreUnavailable,
    Versioned,
)

_T = TypeVar("_T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS documents ("
    " key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL, revision TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS revision_counter ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO revision_counter (id, last) VALUES (1, 0)",
)

_PREFIX_QUERY = (
    "SELECT key, value, revision FROM documents WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key"
)


class SqliteStore:
    """A CoordinationStore in one SQLite file, shared by any number of local processes.

    Threading: one connection opened with ``check_same_thread=False`` and guarded by a
    lock. SQLite admits one writer per file anyway, so per-thread connections would buy
    only concurrent reads, which this store's load does not need, and they would make
    ``close()`` impossible: a connection may only be closed by the thread that made it.
    The lock is never held while ``wait_for_change`` sleeps between polls.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval_s: float = 0.05,
        busy_timeout_s: float = 5.0,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"bfm: poll_interval_s must be positive, got {poll_interval_s}")
        if busy_timeout_s < 0:
            raise ValueError(f"bfm: busy_timeout_s must not be negative, got {busy_timeout_s}")
        self._path = os.path.abspath(os.fspath(path))
        self._poll_interval_s = poll_interval_s
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._conn = self._open()

    @property
    def url(self) -> str:
        return f"sqlite://{self._path}"

    @property
    def path(self) -> str:
        """Absolute path of the database file."""
        return self._path

    # -- connection and error mapping ------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        """One clear sentence naming the file and the likely fix."""
        reason = str(exc) or type(exc).__name__
        where = f"the sqlite store at {self._path}"
        if "locked" in reason or "busy" in reason:
            return StoreUnavailable(
                f"bfm: {where} stayed locked longer than busy_timeout_s={self._busy_timeout_s} "
                f"({reason}); is another process holding a long write?"
            )
        if "disk I/O" in reason or "full" in reason:
            return StoreUnavailable(
                f"bfm: cannot write {where} ({reason}); is the disk full or failing?"
            )
        if "not a database" in reason or "malformed" in reason:
            return StoreUnavailable(
                f"bfm: {where} is not a usable bfm database ({reason}); "
                "point the store URL at another file"
            )
        return StoreUnavailable(
            f"bfm: cannot open {where} ({reason}); does the directory exist and is it writable?"
        )

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(self._path)
        if not os.path.isdir(directory):
            raise StoreUnavailable(
                f"bfm: cannot open the sqlite store at {self._path} (the directory "
                f"{directory} does not exist); create it first or choose another path"
            )
        if os.path.isdir(self._path):
            raise StoreUnavailable(
                f"bfm: cannot open the sqlite store at {self._path} (it is a directory); "
                "name a file inside it, e.g. sqlite://" + os.path.join(self._path, "bfm.db")
            )
        try:
            # isolation_level=None: no implicit transactions; each write opens its own.
            # timeout= is SQLite's busy timeout: how long a write waits for the file lock.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError(f"could not switch to WAL journal mode ({mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable(exc) from exc
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed.is_set():
                raise StoreUnavailable(
                    f"bfm: the sqlite store at {self._path} was closed; open it again"
                )
            yield self._conn

    def _read(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._connection() as conn:
            try:
                return run(conn)
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc

    def _write(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``run`` in a BEGIN IMMEDIATE transaction; only COMMIT errors are OutcomeUnknown."""
        with self._connection() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
            try:
                result = run(conn)
            except Conflict:
                _rollback_quietly(conn)
                raise
            except sqlite3.Error as exc:
                _rollback_quietly(conn)
                raise self._unavailable(exc) from exc
            except BaseException:
                _rollback_quietly(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback_quietly(conn)
                raise OutcomeUnknown(
                    f"bfm: the commit to the sqlite store at {self._path} failed ({exc}); "
                    "the write may or may not have been applied, read the key again"
                ) from exc
            return result

    # -- the port ---------------------------------------------------------------------------

    def get(self, key: str) -> Versioned | None:
        def run(conn: sqlite3.Connection) -> Versioned | None:
            row = conn.execute(
                "SELECT value, revision FROM documents WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            return Versioned(key=key, value=decode_document(row[0]), revision=row[1])

        return self._read(run)

    def list(self, prefix: str) -> list[Versioned]:
        return self._read(lambda conn: _select_prefix(conn, prefix))

    def create(self, key: str, value: JsonDoc) -> str:
        text = encode_document(key, value)

        def run(conn: sqlite3.Connection) -> str:
            if conn.execute("SELECT 1 FROM documents WHERE key = ?", (key,)).fetchone():
                raise Conflict(f"bfm: key {key!r} already exists")
            revision = _next_revision(conn)
            conn.execute(
                "INSERT INTO documents (key, value, revision) VALUES (?, ?, ?)",
                (key, text, revision),
            )
            return revision

        return self._write(run)

    def compare_and_set(self, key: str, value: JsonDoc, *, expected_revision: str) -> str:
        text = encode_document(key, value)

        def run(conn: sqlite3.Connection) -> str:
            _check_revision(conn, key, expected_revision)
            revision = _next_revision(conn)
            conn.execute(
                "UPDATE documents SET value = ?, revision = ? WHERE key = ?",
                (text, revision, key),
            )
            return revision

        return self._write(run)

    def delete(self, key: str, *, expected_revision: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            _check_revision(conn, key, expected_revision)
            conn.execute("DELETE FROM documents WHERE key = ?", (key,))

        self._write(run)

    def wait_for_change(
        self, prefix: str, known: Mapping[str, str], *, timeout_s: float
    ) -> builtins.list[Versioned]:  # plain ``list`` here would name the method above
        return poll_for_change(
            self.list,
            prefix,
            known,
            timeout_s=timeout_s,
            poll_interval_s=self._poll_interval_s,
            closed=self._closed,
        )

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._conn.close()


def _select_prefix(conn: sqlite3.Connection, prefix: str) -> list[Versioned]:
    return [
        Versioned(key=key, value=decode_document(text), revision=revision)
        for key, text, revision in conn.execute(_PREFIX_QUERY, (prefix,))
    ]


def _check_revision(conn: sqlite3.Connection, key: str, expected_revision: str) -> None:
    row = conn.execute("SELECT revision FROM documents WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise Conflict(f"bfm: key {key!r} does not exist")
    if row[0] != expected_revision:
        raise Conflict(f"bfm: key {key!r} changed since revision {expected_revision!r}")


def _next_revision(conn: sqlite3.Connection) -> str:
    # fetchall, not fetchone: the statement must run to completion before COMMIT.
    rows = conn.execute(
        "UPDATE revision_counter SET last = last + 1 WHERE id = 1 RETURNING last"
    ).fetchall()
    if not rows:
        raise sqlite3.DatabaseError("the revision_counter row is missing")
    return str(rows[0][0])


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; a failure here changes nothing we report."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
