"""The audit log's hash chain (failover.core.audit): an untouched log verifies; any single
flipped byte, removed record, swapped pair or cut is found, and the finding names where."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditHead,
    AuditRecord,
    Outcome,
    Problem,
    Verdict,
    canonical_json,
    chain,
    parse_record,
    split_log,
    verify_lines,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
entries = st.builds(
    AuditEntry,
    who=st.text(max_size=16),
    action=st.sampled_from(["drain", "switchover", "decision.failover", "license.issue"]),
    what=st.text(max_size=40),
    why=st.text(max_size=20),
    before=json_values,
    after=json_values,
    trace_id=st.text(alphabet="0123456789abcdef", max_size=32),
    outcome=st.sampled_from(list(Outcome)),
)
wall_times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


def build(items: list[AuditEntry], start_wall_s: float = 1.7e9) -> tuple[bytes, AuditHead]:
    """A valid log of ``items`` and its head."""
    head: AuditHead | None = None
    data = b""
    for i, entry in enumerate(items):
        record = chain(entry, after=head, at_wall_s=start_wall_s + i)
        data += record.line()
        head = record.head
    assert head is not None
    return data, head


def check(data: bytes, head: AuditHead | None) -> Verdict:
    lines, ended = split_log(data)
    return verify_lines(lines, head, ends_with_newline=ended)


logs = st.lists(entries, min_size=1, max_size=6).map(build)


@settings(max_examples=100, deadline=None)
@given(logs)
def test_an_untouched_log_verifies(log: tuple[bytes, AuditHead]) -> None:
    data, head = log
    verdict = check(data, head)
    assert verdict.intact, verdict.findings
    assert verdict.records == head.seq


@settings(max_examples=300, deadline=None)
@given(logs, st.data())
def test_any_single_flipped_byte_is_found(log: tuple[bytes, AuditHead], data: Any) -> None:
    raw, head = log
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="offset")
    new = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != raw[at]))
    flipped = raw[:at] + bytes([new]) + raw[at + 1 :]
    assert not check(flipped, head).intact


@settings(max_examples=100, deadline=None)
@given(st.lists(entries, min_size=2, max_size=6).map(build), st.data())
def test_any_removed_record_is_found(log: tuple[bytes, AuditHead], data: Any) -> None:
    raw, head = log
    lines, _ = split_log(raw)
    gone = data.draw(st.integers(min_value=0, max_value=len(lines) - 1), label="removed")
    kept = lines[:gone] + lines[gone + 1 :]
    verdict = verify_lines(kept, head, ends_with_newline=True)
    assert not verdict.intact


@settings(max_examples=100, deadline=None)
@given(st.lists(entries, min_size=2, max_size=6).map(build), st.data())
def test_any_swapped_pair_is_found(log: tuple[bytes, AuditHead], data: Any) -> None:
    raw, head = log
    lines, _ = split_log(raw)
    i = data.draw(st.integers(min_value=0, max_value=len(lines) - 2), label="i")
    j = data.draw(st.integers(min_value=i + 1, max_value=len(lines) - 1), label="j")
    lines[i], lines[j] = lines[j], lines[i]
    assert not verify_lines(lines, head, ends_with_newline=True).intact


@settings(max_examples=100, deadline=None)
@given(logs, st.data())
def test_any_truncation_is_found(log: tuple[bytes, AuditHead], data: Any) -> None:
    raw, head = log
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="kept bytes")
    assert not check(raw[:cut], head).intact


# -- what the findings say ----------------------------------------------------------------


def five() -> tuple[list[bytes], AuditHead]:
    raw, head = build([AuditEntry("op@h", "drain", f"drain a #{i}") for i in range(5)])
    return split_log(raw)[0], head


def only(verdict: Verdict) -> tuple[int, int | None, Problem, str]:
    assert len(verdict.findings) == 1, verdict.findings
    f = verdict.findings[0]
    return f.line, f.seq, f.problem, f.sentence()


def test_an_edited_record_is_named_by_number() -> None:
    lines, head = five()
    doc = json.loads(lines[2])
    doc["why"] = "nobody did this"
    lines[2] = canonical_json(doc)
    line, seq, problem, sentence = only(verify_lines(lines, head, ends_with_newline=True))
    assert (line, seq, problem) == (3, 3, Problem.EDITED)
    assert sentence == "record 3: edited: its content does not match its hash"


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    lines, head = five()
    forged = parse_record(lines[1])
    again = chain(
        AuditEntry(forged.who, forged.action, "something else"),
        after=parse_record(lines[0]).head,
        at_wall_s=forged.at_wall_s,
    )
    lines[1] = again.line()[:-1]
    line, seq, problem, sentence = only(verify_lines(lines, head, ends_with_newline=True))
    assert (line, seq, problem) == (3, 3, Problem.BROKEN_CHAIN)
    assert "prev_hash is not the hash of the record before it" in sentence


def test_a_removed_record_is_named() -> None:
    lines, head = five()
    del lines[1]
    line, seq, problem, sentence = only(verify_lines(lines, head, ends_with_newline=True))
    assert (line, seq, problem) == (2, 3, Problem.BROKEN_CHAIN)
    assert (
        sentence
        == "line 2 (record 3): broken_chain: numbered 3, expected 2: record(s) 2 are missing"
    )


def test_a_swap_names_both_records() -> None:
    lines, head = five()
    lines[1], lines[2] = lines[2], lines[1]
    found = verify_lines(lines, head, ends_with_newline=True).findings
    assert [(f.line, f.seq, f.problem) for f in found] == [
        (2, 3, Problem.BROKEN_CHAIN),
        (3, 2, Problem.BROKEN_CHAIN),
        (4, 4, Problem.BROKEN_CHAIN),  # follows record 3, which no longer stands before it
    ]
    assert "repeated or reordered" in found[1].detail


def test_the_last_record_cut_off_shows_against_the_head() -> None:
    lines, head = five()
    line, _, problem, sentence = only(verify_lines(lines[:-1], head, ends_with_newline=True))
    assert (line, problem) == (0, Problem.TRUNCATED)
    assert "ends at record 4 but the store's head is at record 5" in sentence
    assert "cut off" in sentence


def test_a_line_cut_mid_record_is_incomplete() -> None:
    lines, head = five()
    lines[-1] = lines[-1][:40]
    problems = {f.problem for f in verify_lines(lines, head, ends_with_newline=False).findings}
    assert problems == {Problem.MALFORMED, Problem.INCOMPLETE, Problem.TRUNCATED}


def test_records_after_the_head_are_reported_as_unanchored() -> None:
    lines, _ = five()
    line, _, problem, sentence = only(
        verify_lines(lines, AuditHead(3, parse_record(lines[2]).hash), ends_with_newline=True)
    )
    assert (line, problem) == (4, Problem.UNANCHORED)
    assert "2 record(s) after the anchored head (record 3)" in sentence


def test_a_log_without_a_head_is_not_vouched_for() -> None:
    lines, _ = five()
    assert only(verify_lines(lines, None, ends_with_newline=True))[2] is Problem.NO_HEAD
    assert verify_lines([], None, ends_with_newline=True).intact  # nothing written yet


def test_a_head_that_differs_from_its_record_is_found() -> None:
    lines, _ = five()
    line, seq, problem, _ = only(
        verify_lines(lines, AuditHead(5, "f" * 64), ends_with_newline=True)
    )
    assert (line, seq, problem) == (5, 5, Problem.DIVERGED)


def test_an_equal_record_in_another_spelling_is_an_edit() -> None:
    """JSON allows uppercase hex in \\u escapes: same content, different bytes, found."""
    raw, head = build([AuditEntry("op@h", "drain", "drain a", why="caf\u00e9")])
    lines, _ = split_log(raw)
    assert b"\\u00e9" in lines[0]
    lines[0] = lines[0].replace(b"\\u00e9", b"\\u00E9")
    assert parse_record(lines[0]) == parse_record(split_log(raw)[0][0])
    assert only(verify_lines(lines, head, ends_with_newline=True))[2] is Problem.EDITED


def test_a_flip_to_an_out_of_range_number_is_malformed() -> None:
    """Found by the flip property: 3e+16 -> 3e+316 parses as infinity, which has no
    canonical form; it is a malformed line, never a crash of the check."""
    raw, head = build([AuditEntry("op@h", "drain", "x", after={"n": 3e16})])
    assert b"3e+16" in raw
    lines, _ = split_log(raw.replace(b"3e+16", b"3e+316"))
    found = verify_lines(lines, head, ends_with_newline=True).findings
    assert (found[0].line, found[0].problem) == (1, Problem.MALFORMED)
    assert "out of range" in found[0].detail


def test_the_first_record_starts_the_chain() -> None:
    record = chain(AuditEntry("controller@w", "decision.initial", "x"), after=None, at_wall_s=1.0)
    assert (record.seq, record.prev_hash) == (1, GENESIS_HASH)
    assert parse_record(record.line()[:-1]) == record
    assert isinstance(record, AuditRecord)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"", "not JSON"),
        (b"\xff", "not UTF-8"),
        (b"[]", "not a JSON object"),
        (b'{"seq": NaN}', "NaN is not a JSON number"),
        (b"{}", "missing"),
    ],
)
def test_lines_that_are_not_records_say_why(line: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_record(line)


def test_a_state_json_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="must be JSON"):
        chain(AuditEntry("w", "a", "b", before=object()), after=None, at_wall_s=1.0)
    with pytest.raises(ValueError, match="finite"):
        chain(AuditEntry("w", "a", "b"), after=None, at_wall_s=float("nan"))


def test_a_head_document_is_checked() -> None:
    assert AuditHead.from_doc({"seq": 3, "hash": "a" * 64}) == AuditHead(3, "a" * 64)
    with pytest.raises(ValueError, match="seq"):
        AuditHead.from_doc({"seq": True, "hash": "a" * 64})
    with pytest.raises(ValueError, match="hash"):
        AuditHead.from_doc({"seq": 1, "hash": "A" * 64})
