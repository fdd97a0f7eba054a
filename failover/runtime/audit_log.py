"""The audit log on disk and its head in the coordination store: append, anchor, read.

One append-only file per system (``<run dir>/audit.log``, see ``locate_audit_log``), one
record per line (``failover.core.audit``). Any number of processes append to it: each
append opens the file, takes an exclusive ``flock``, reads the last record, writes the
new ones after it in one ``write`` and ``fsync``s before letting go. The lock covers only
local file work, never a store request, so a slow store never holds up another appender.

After writing, the appender advances the head in the store (``audit/head``: the newest
record's number and hash) by compare-and-set, forward only: on ``Conflict`` it reads the
head again and stops as soon as the head is at or past its own record (a later append
anchored it), else tries again, at most ``conflict_attempts`` times. It never moves the
head over a log that does not fit it (the head was past the log's end, or at its last
record with another hash): that would hide a cut or an edit; it says so instead.

When the store cannot be reached the record stays in the file, unanchored (``Appended``
says why), and the next append or ``anchor_pending`` anchors it; ``bfm audit verify``
reports unanchored records meanwhile. An appender given ``anchor_retry_after_s`` (the
controller) leaves the store alone for that long after a failure, so an unreachable store
costs a decision round at most one timed-out request per that interval.

Every record is also logged (logger ``bfm.audit``, JSON, shipped to Loki with the rest).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bfm_observe.redaction import redact_any, redact_text
from failover.core.audit import (
    AuditEntry,
    AuditHead,
    AuditRecord,
    ChainVerifier,
    Outcome,
    Verdict,
    chain,
    parse_record,
)
from failover.ports import (
    Clock,
    Conflict,
    CoordinationStore,
    OutcomeUnknown,
    StoreError,
    StoreUnavailable,
)

AUDIT_FILE = "audit.log"
AUDIT_HEAD_KEY = "audit/head"
AUDIT_LOG_ENV = "BFM_AUDIT_LOG"
CONFLICT_ATTEMPTS = 5
FILE_MODE = 0o640
TAIL_CHUNK_BYTES = 64 * 1024

log = logging.getLogger("bfm.audit")


class AuditError(Exception):
    """The audit log cannot be read or written; the message names the file and the fix."""


@dataclass(frozen=True)
class Appended:
    """What one append did: the records written and whether the head now covers them."""

    records: tuple[AuditRecord, ...]
    anchored: bool
    note: str = ""  # why the head does not cover them ("" when it does)


def locate_audit_log(
    *, run_dir: Path | None, store_url: str | None, environ: Mapping[str, str]
) -> Path | None:
    """Where a system's audit log is: ``$BFM_AUDIT_LOG``, else ``<run dir>/audit.log``,
    else beside a sqlite store's file (the demo keeps it in the run directory); None when
    none of them names a place (an etcd store without a run directory)."""
    named = environ.get(AUDIT_LOG_ENV, "").strip()
    if named:
        return Path(named)
    if run_dir is not None:
        return Path(run_dir) / AUDIT_FILE
    if store_url and store_url.startswith("sqlite://"):
        db = store_url.removeprefix("sqlite://")
        if db and db != ":memory:":
            return Path(db).parent / AUDIT_FILE
    return None


def operator_identity() -> str:
    """``user@host`` of the operator running this process."""
    import getpass  # noqa: PLC0415 - only operator commands need it

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "operator"
    return f"{user}@{socket.gethostname()}"


def current_trace_id() -> str:
    """The trace id of the current span, "" when there is none."""
    from opentelemetry import trace  # noqa: PLC0415 - keeps importing this module light

    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def read_head(store: CoordinationStore, key: str = AUDIT_HEAD_KEY) -> AuditHead | None:
    """The anchored head (None: never anchored). ValueError when the document is damaged;
    StoreError when the store cannot answer."""
    got = store.get(key)
    return AuditHead.from_doc(got.value) if got is not None else None


class AuditTrail:
    """Appends one writer's records (``who``) to the audit log and anchors them."""

    def __init__(
        self,
        path: Path,
        store: CoordinationStore | None,
        *,
        who: str,
        clock: Clock,
        anchor_retry_after_s: float = 0.0,
        conflict_attempts: int = CONFLICT_ATTEMPTS,
        head_key: str = AUDIT_HEAD_KEY,
    ) -> None:
        """``store`` None: nothing is anchored (every append says so)."""
        self.path, self.store, self.who, self.clock = Path(path), store, who, clock
        self.anchor_retry_after_s = anchor_retry_after_s
        self.conflict_attempts = conflict_attempts
        self.head_key = head_key
        self.pending: AuditHead | None = None  # this writer's newest record not anchored
        self.warnings: list[str] = []  # one sentence per append that was not anchored
        self._store_failed_at_s: float | None = None

    # -- writing --------------------------------------------------------------------------

    def check(self) -> None:
        """Raise AuditError unless a record could be appended now (before an operator
        changes anything: no change is made that could not be audited)."""
        with self._locked() as fd:
            _last_head(fd, self.path)

    def record(
        self,
        action: str,
        what: str,
        *,
        why: str = "",
        before: Any = None,
        after: Any = None,
        trace_id: str | None = None,
        outcome: Outcome = Outcome.DONE,
    ) -> Appended:
        """Append one record as ``self.who``; ``trace_id`` None: the current span's."""
        trace = current_trace_id() if trace_id is None else trace_id
        return self.append([AuditEntry(self.who, action, what, why, before, after, trace, outcome)])

    def append(self, entries: Sequence[AuditEntry]) -> Appended:
        """Write ``entries`` as the next records (one lock, one fsync), then anchor the
        newest. AuditError when the file cannot be written (nothing was written then);
        a store problem is never raised: ``Appended`` says why the head lags."""
        if not entries:
            return Appended((), anchored=True)
        head, head_note = self._head_before()
        with self._locked() as fd:
            last = _last_head(fd, self.path)
            fits = _fits(head, last)
            records, prev = [], last
            for entry in entries:
                record = chain(redacted(entry), after=prev, at_wall_s=self.clock.wall())
                records.append(record)
                prev = record.head
            _write_all(fd, b"".join(r.line() for r in records), self.path)
        for record in records:
            _log(record)
        newest = records[-1].head
        if not fits:
            note = (
                f"the audit log {self.path} does not fit the head anchored in the store "
                f"(record {head.seq if head else '?'}; the log ended at record "
                f"{last.seq if last else 0}): it was cut or edited; the head is left "
                "where it is; run 'bfm audit verify'"
            )
            return self._unanchored(tuple(records), note, level=logging.ERROR)
        self.pending = newest
        note = head_note or self.anchor_pending()
        if note:
            return self._unanchored(tuple(records), note)
        return Appended(tuple(records), anchored=True)

    def anchor_pending(self) -> str:
        """Move the head up to this writer's newest record if it is not there yet; why
        not ("" when done or nothing was pending). Called after every append, and by the
        controller every round while something is pending."""
        pending = self.pending
        if pending is None:
            return ""
        skipped = self._skip_store()
        if skipped:
            return skipped
        assert self.store is not None
        for _ in range(self.conflict_attempts):
            try:
                got = self.store.get(self.head_key)
                if got is not None:
                    head = AuditHead.from_doc(got.value)
                    if head.seq >= pending.seq:
                        self.pending = None
                        return ""  # a later append anchored it (and its chain covers ours)
                    self.store.compare_and_set(
                        self.head_key, pending.to_doc(), expected_revision=got.revision
                    )
                else:
                    self.store.create(self.head_key, pending.to_doc())
            except Conflict:
                continue
            except ValueError as err:
                return self._failed(f"the store's {self.head_key} is damaged ({err})")
            except (StoreUnavailable, OutcomeUnknown) as err:
                return self._failed(f"the store failed ({type(err).__name__}: {err})")
            self.pending, self._store_failed_at_s = None, None
            return ""
        return self._failed(f"the head changed under {self.conflict_attempts} tries")

    def _failed(self, why: str) -> str:
        self._store_failed_at_s = self.clock.monotonic()
        return why

    def _head_before(self) -> tuple[AuditHead | None, str]:
        """The head as anchored before this append, and why it could not be read."""
        skipped = self._skip_store()
        if skipped:
            return None, skipped
        assert self.store is not None
        try:
            return read_head(self.store, self.head_key), ""
        except ValueError as err:
            return None, self._failed(f"the store's {self.head_key} is damaged ({err})")
        except StoreError as err:
            return None, self._failed(f"the store failed ({type(err).__name__}: {err})")

    def _skip_store(self) -> str:
        if self.store is None:
            return "no coordination store to anchor the head in"
        failed = self._store_failed_at_s
        if failed is not None and self.clock.monotonic() - failed < self.anchor_retry_after_s:
            return "the store failed moments ago; the head is anchored later"
        return ""

    def _unanchored(
        self, records: tuple[AuditRecord, ...], note: str, *, level: int = logging.WARNING
    ) -> Appended:
        sentence = f"audit record {records[-1].seq} is in {self.path} but not anchored: {note}"
        self.warnings.append(sentence)
        log.log(level, sentence, extra={"event": "audit_unanchored", "audit_seq": records[-1].seq})
        return Appended(records, anchored=False, note=note)

    @contextmanager
    def _locked(self) -> Iterator[int]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as err:
            raise AuditError(
                f"cannot open the audit log {self.path} ({err.strerror or err}); check that "
                "its directory exists and is writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing lets go of the lock


def _fits(head: AuditHead | None, last: AuditHead | None) -> bool:
    """Whether the log ending at ``last`` may carry the head ``head`` forward: the head is
    behind the log's end, or is its last record."""
    if head is None:
        return True  # never anchored (or the store unreadable): nothing to contradict
    if last is None or head.seq > last.seq:
        return False
    return head.seq < last.seq or head.hash == last.hash


def _last_head(fd: int, path: Path) -> AuditHead | None:
    """The number and hash of the file's last record (None: empty). AuditError when the
    last line is cut off or not a record."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    end = size - 1
    if os.pread(fd, 1, end) != b"\n":
        raise AuditError(
            f"the last line of the audit log {path} is cut off (no newline); run "
            "'bfm audit verify' and keep the file as evidence"
        )
    line = b""
    start = end
    while start > 0:
        begin = max(0, start - TAIL_CHUNK_BYTES)
        line = os.pread(fd, start - begin, begin) + line
        start = begin
        if b"\n" in line:
            line = line.rsplit(b"\n", 1)[1]
            break
    try:
        return parse_record(line).head
    except ValueError as err:
        raise AuditError(
            f"the last record of the audit log {path} is damaged ({err}); run "
            "'bfm audit verify' and keep the file as evidence"
        ) from None


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """Append ``data`` and fsync; on failure cut the file back to where it was, so no
    half record is ever left behind."""
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as err:
        os.ftruncate(fd, size)
        raise AuditError(f"cannot write to the audit log {path} ({err.strerror or err})") from None


def redacted(entry: AuditEntry) -> AuditEntry:
    """``entry`` with every secret in its texts and states replaced (``bfm_observe.redaction``):
    an operator's ``--reason`` or a state document must not carry a password into the log."""
    return replace(
        entry,
        what=redact_text(entry.what),
        why=redact_text(entry.why),
        before=redact_any(entry.before),
        after=redact_any(entry.after),
    )


def _log(record: AuditRecord) -> None:
    log.info(
        f"audit {record.seq}: {record.who}: {record.what}",
        extra={
            "event": "audit",
            "audit_seq": record.seq,
            "who": record.who,
            "action": record.action,
            "outcome": record.outcome,
            "why": record.why,
            "before": record.before,
            "after": record.after,
            "trace_id": record.trace_id,
            "hash": record.hash,
        },
    )


# -- reading ------------------------------------------------------------------------------


def iter_lines(path: Path) -> Iterator[tuple[bytes, bool]]:
    """Each line of the log without its newline, and whether it had one.
    FileNotFoundError when there is no log; AuditError when it cannot be read."""
    try:
        with path.open("rb") as file:
            for raw in file:
                ended = raw.endswith(b"\n")
                yield (raw[:-1] if ended else raw), ended
    except FileNotFoundError:
        raise
    except OSError as err:
        raise AuditError(f"cannot read the audit log {path} ({err.strerror or err})") from None


def verify_log(path: Path, head: AuditHead | None) -> Verdict:
    """The chain of the log at ``path`` checked against ``head``; a missing file is an
    empty log (so a removed log shows as cut off when a head was anchored)."""
    verifier = ChainVerifier(head)
    ended = True
    try:
        for line, newline in iter_lines(path):
            verifier.feed(line)
            ended = newline
    except FileNotFoundError:
        pass
    return verifier.finish(ends_with_newline=ended)


def read_records(path: Path) -> Iterator[AuditRecord | tuple[int, str]]:
    """The records of the log in order; a line that is not one as (line, why)."""
    for n, (line, _) in enumerate(iter_lines(path), start=1):
        try:
            yield parse_record(line)
        except ValueError as err:
            yield n, str(err)
