"""The audit trail's records, their canonical form and hash chain, and the chain's check.

One record per line, each line the record's canonical JSON (keys sorted, no spaces, ASCII
only) followed by ``\\n``. A record carries the hash of the record before it
(``prev_hash``; the first one ``GENESIS_HASH``) and its own ``hash``: the SHA-256 of the
canonical JSON of every other field. Records are numbered from 1 without gaps (``seq``).
The newest record's number and hash (``AuditHead``) are kept apart from the file (the
runtime anchors them in the coordination store), so cutting records off the end shows too.

``ChainVerifier`` reads the lines one by one and lists what is wrong (``Finding``): a line
that is not a record, a record edited (its hash no longer matches, or its text is not the
canonical form of its content), removed or reordered (numbers or ``prev_hash`` break), and
a log shorter than, diverging from or running past the anchored head. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

RECORD_VERSION = 1
GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of record 1."""

_HEX = frozenset("0123456789abcdef")
_TEXT_FIELDS = ("who", "action", "what", "why", "outcome", "trace_id")
_FIELDS = frozenset(
    {"v", "seq", "at_wall_s", *_TEXT_FIELDS, "before", "after", "prev_hash", "hash"}
)


class Outcome(StrEnum):
    """What came of the audited action."""

    DONE = "done"  # carried out: ``after`` is the new state
    UNCHANGED = "unchanged"  # nothing to change: ``after`` equals ``before``
    REFUSED = "refused"  # refused as unsafe or impossible: ``what`` says why


@dataclass(frozen=True)
class AuditEntry:
    """What a writer has to say: who did what, why, and the state before and after."""

    who: str  # user@host for an operator, controller@<site> for a controller
    action: str  # a short name: drain, switchover, update.begin, decision.failover, ...
    what: str  # one sentence: what was done, as the operator would say it
    why: str = ""  # the operator's --reason, or the decision's reason
    before: Any = None  # JSON: the state before (a policy, an ownership document, ...)
    after: Any = None  # JSON: the state after
    trace_id: str = ""  # the decision's trace, or the operator's current span's ("" none)
    outcome: Outcome = Outcome.DONE


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log."""

    seq: int
    at_wall_s: float
    who: str
    action: str
    what: str
    why: str
    outcome: str
    before: Any
    after: Any
    trace_id: str
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field the hash covers (all but ``hash``)."""
        return {
            "v": RECORD_VERSION,
            "seq": self.seq,
            "at_wall_s": self.at_wall_s,
            "who": self.who,
            "action": self.action,
            "what": self.what,
            "why": self.why,
            "outcome": self.outcome,
            "before": self.before,
            "after": self.after,
            "trace_id": self.trace_id,
            "prev_hash": self.prev_hash,
        }

    def to_doc(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    def line(self) -> bytes:
        """The record as the log holds it: canonical JSON and a newline."""
        return canonical_json(self.to_doc()) + b"\n"

    @property
    def head(self) -> AuditHead:
        return AuditHead(self.seq, self.hash)


@dataclass(frozen=True)
class AuditHead:
    """The newest record of a log as anchored outside it: its number and hash."""

    seq: int
    hash: str

    def to_doc(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> AuditHead:
        """ValueError naming the field when the document is not a head."""
        seq, digest = doc.get("seq"), doc.get("hash")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(f"field 'seq' must be an integer >= 1, got {seq!r}")
        if not _is_digest(digest):
            raise ValueError(f"field 'hash' must be 64 lowercase hex digits, got {digest!r}")
        return AuditHead(seq, str(digest))


def canonical_json(value: Any) -> bytes:
    """The one byte form a JSON value is hashed and written in. ValueError for NaN or
    infinity, TypeError for what JSON cannot hold."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii")


def body_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a record's fields without ``hash``, in canonical form."""
    return hashlib.sha256(canonical_json(dict(body))).hexdigest()


def chain(entry: AuditEntry, *, after: AuditHead | None, at_wall_s: float) -> AuditRecord:
    """The record of ``entry`` that follows the record ``after`` (None: the first one).

    ``before``/``after`` are taken as their JSON form (tuples become lists), so the record
    reads back equal to itself. ValueError for a state JSON cannot hold."""
    try:
        before = json.loads(canonical_json(entry.before))
        after_state = json.loads(canonical_json(entry.after))
    except TypeError as err:
        raise ValueError(f"an audit record's state must be JSON ({err})") from None
    if not math.isfinite(at_wall_s):
        raise ValueError(f"an audit record's time must be finite, got {at_wall_s!r}")
    unsigned = AuditRecord(
        seq=after.seq + 1 if after else 1,
        at_wall_s=float(at_wall_s),
        who=entry.who,
        action=entry.action,
        what=entry.what,
        why=entry.why,
        outcome=entry.outcome.value,
        before=before,
        after=after_state,
        trace_id=entry.trace_id,
        prev_hash=after.hash if after else GENESIS_HASH,
        hash="",
    )
    return replace(unsigned, hash=body_hash(unsigned.body()))


def parse_record(line: bytes) -> AuditRecord:
    """The record one line holds (without its newline); ValueError saying what is wrong.

    Checks the shape only: whether the hash fits the content and the record its place in
    the chain is ``ChainVerifier``'s to say."""
    try:
        doc = json.loads(
            line.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except (ValueError, RecursionError) as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"not a JSON object but {type(doc).__name__}")
    missing, extra = sorted(_FIELDS - set(doc)), sorted(set(doc) - _FIELDS)
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(extra)}"] if extra else []
        )
        raise ValueError(f"fields: {'; '.join(parts)}")
    if doc["v"] != RECORD_VERSION or isinstance(doc["v"], bool):
        raise ValueError(f"field 'v' must be {RECORD_VERSION}, got {doc['v']!r}")
    seq = doc["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"field 'seq' must be an integer >= 1, got {seq!r}")
    at = doc["at_wall_s"]
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise ValueError(f"field 'at_wall_s' must be a number, got {at!r}")
    for name in _TEXT_FIELDS:
        if not isinstance(doc[name], str):
            raise ValueError(f"field {name!r} must be a string, got {doc[name]!r}")
    for name in ("prev_hash", "hash"):
        if not _is_digest(doc[name]):
            raise ValueError(f"field {name!r} must be 64 lowercase hex digits")
    fields = {name: doc[name] for name in _FIELDS if name != "v"}
    return AuditRecord(**fields)


# -- checking a log ----------------------------------------------------------------------


class Problem(StrEnum):
    """The kinds of finding."""

    MALFORMED = "malformed"  # the line is not a record
    EDITED = "edited"  # the content does not fit the hash, or the text is not canonical
    BROKEN_CHAIN = "broken_chain"  # numbered out of order, or prev_hash breaks
    INCOMPLETE = "incomplete"  # the last line has no newline: cut off mid-record
    TRUNCATED = "truncated"  # the anchored head is past the end of the log
    DIVERGED = "diverged"  # the record at the head's number is not the anchored one
    NO_HEAD = "no_head"  # records but no head anchored
    UNANCHORED = "unanchored"  # records after the anchored head


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a log: where (line, and record number where known) and what."""

    line: int  # 1-based line of the log; 0 for the log as a whole
    seq: int | None  # the record number the line claims (None: unreadable)
    problem: Problem
    detail: str

    def sentence(self) -> str:
        where = f"line {self.line}" if self.line else "the log"
        if self.seq is not None and self.seq != self.line:
            where += f" (record {self.seq})"
        elif self.seq is not None:
            where = f"record {self.seq}"
        return f"{where}: {self.problem.value}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    """What ``ChainVerifier`` found: intact when there are no findings."""

    records: int  # lines read, each one a record slot
    head: AuditHead | None
    findings: tuple[Finding, ...] = field(default=())

    @property
    def intact(self) -> bool:
        return not self.findings


class ChainVerifier:
    """Checks a log line by line against the chain and the anchored head.

    ``feed`` each line without its newline, in order; ``finish`` says whether the log ended
    with a newline and returns the verdict."""

    def __init__(self, head: AuditHead | None) -> None:
        self.head = head
        self.lines = 0
        self.findings: list[Finding] = []
        self._expected_seq = 1
        self._prev_hash: str | None = GENESIS_HASH  # None after an unreadable line
        self._last_seq = 0  # the largest record number read
        self._head_line = 0  # the line of the record numbered as the head (0: not read)
        self._hash_at_head = ""

    def feed(self, line: bytes) -> None:
        self.lines += 1
        n = self.lines
        try:
            record = parse_record(line)
        except ValueError as err:
            self._find(n, None, Problem.MALFORMED, f"not an audit record ({err})")
            self._expected_seq += 1
            self._prev_hash = None
            return
        self._last_seq = max(self._last_seq, record.seq)
        if self.head is not None and record.seq == self.head.seq and not self._head_line:
            self._head_line, self._hash_at_head = n, record.hash
        expected, prev = self._expected_seq, self._prev_hash
        self._prev_hash = record.hash  # the next record names this one's, edited or not
        if body_hash(record.body()) != record.hash:
            # Its number may be the edit: the next record is expected where this one stands.
            self._expected_seq = expected + 1
            self._find(n, record.seq, Problem.EDITED, "its content does not match its hash")
            return
        self._expected_seq = max(expected, record.seq + 1)
        if canonical_json(record.to_doc()) != line:
            detail = "its text is not the canonical form of its content (edited by hand?)"
            self._find(n, record.seq, Problem.EDITED, detail)
        elif record.seq > expected:
            gone = str(expected) if record.seq == expected + 1 else f"{expected}..{record.seq - 1}"
            detail = f"numbered {record.seq}, expected {expected}: record(s) {gone} are missing"
            self._find(n, record.seq, Problem.BROKEN_CHAIN, detail)
        elif record.seq < expected:
            detail = f"numbered {record.seq}, expected {expected}: repeated or reordered"
            self._find(n, record.seq, Problem.BROKEN_CHAIN, detail)
        elif prev is not None and record.prev_hash != prev:
            detail = (
                "its prev_hash is not the hash of the record before it (a record was removed, "
                "reordered or replaced)"
            )
            self._find(n, record.seq, Problem.BROKEN_CHAIN, detail)

    def finish(self, *, ends_with_newline: bool) -> Verdict:
        n, head = self.lines, self.head
        if n and not ends_with_newline:
            detail = "the last line has no newline: it was cut off mid-record"
            self._find(n, None, Problem.INCOMPLETE, detail)
        if head is None:
            if n:
                detail = (
                    f"the log has {n} record(s) but no head is anchored in the store (was "
                    "the anchor deleted, or the log copied from another system?)"
                )
                self._find(0, None, Problem.NO_HEAD, detail)
        elif head.seq > self._last_seq:
            detail = (
                f"the log ends at record {self._last_seq} but the store's head is at record "
                f"{head.seq}: the record(s) after {self._last_seq} were cut off (or damaged)"
            )
            self._find(0, None, Problem.TRUNCATED, detail)
        elif not self._head_line:
            detail = f"record {head.seq}, the head anchored in the store, is not in the log"
            self._find(0, None, Problem.DIVERGED, detail)
        else:
            if self._hash_at_head != head.hash:
                detail = f"not the record anchored in the store (hash {head.hash[:16]}...)"
                self._find(self._head_line, head.seq, Problem.DIVERGED, detail)
            if self._head_line < n:
                detail = (
                    f"{n - self._head_line} record(s) after the anchored head (record "
                    f"{head.seq}) cannot be told from forged ones until a later append "
                    "anchors them"
                )
                self._find(self._head_line + 1, None, Problem.UNANCHORED, detail)
        return Verdict(n, head, tuple(self.findings))

    def _find(self, line: int, seq: int | None, problem: Problem, detail: str) -> None:
        self.findings.append(Finding(line, seq, problem, detail))


def verify_lines(lines: list[bytes], head: AuditHead | None, *, ends_with_newline: bool) -> Verdict:
    """``ChainVerifier`` over lines held in memory (tests, small logs)."""
    verifier = ChainVerifier(head)
    for line in lines:
        verifier.feed(line)
    return verifier.finish(ends_with_newline=ends_with_newline)


def split_log(data: bytes) -> tuple[list[bytes], bool]:
    """A whole log's lines (without newlines) and whether it ended with a newline."""
    if not data:
        return [], True
    lines = data.split(b"\n")
    ends = lines[-1] == b""
    return (lines[:-1] if ends else lines), ends


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX
