"""The history checker and the common report, on small hand-built histories."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.chaos.history import (
    DOUBLE_FAULT,
    History,
    LedgerEntry,
    check,
    fill_report,
    unavailability_by_fault,
)
from failover.chaos.report import FaultEvent, Report, Violation, percentile, summarize

S0 = ("backbone", 0)
S1 = ("backbone", 1)

# Field names fixed by ARCHITECTURE.md section 7 ("Reports").
REPORT_FIELDS = {
    "acked",
    "acked_lost",
    "duplicates_applied",
    "stale_epoch_accepts",
    "dual_owner_epochs",
    "max_unavailability_s",
    "unavailability_s",
    "shards_per_site",
    "faults",
    "violations",
}


def _acked(history: History, message_id: int, shard: tuple[str, int], sent_s: float) -> None:
    history.send(message_id, shard, sent_s)
    history.ack(message_id, sent_s + 0.02)


# --- check: stale entries, loss, duplicates, dual owners -------------------------------


def test_acked_message_with_a_current_entry_is_kept() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    _acked(h, 1, S0, 5.0)
    h.apply(LedgerEntry(5.01, 1, S0, 1, "a"))

    v = check(h)

    assert (v.acked, v.acked_lost, v.stale_epoch_accepts) == (1, 0, 0)
    assert (v.duplicates_applied, v.dual_owner_epochs) == (0, 0)
    assert v.lost_ids == []
    assert v.stale_entries == []


def test_entry_under_a_superseded_epoch_is_stale() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)  # b took the shard over at 10 s
    _acked(h, 1, S0, 11.0)
    stale = LedgerEntry(11.01, 1, S0, 1, "a")  # a still applied under epoch 1 after that
    h.apply(stale)
    h.apply(LedgerEntry(11.5, 1, S0, 2, "b"))

    v = check(h)

    assert v.stale_epoch_accepts == 1
    assert v.stale_entries == [stale]
    assert v.acked_lost == 0  # b's entry keeps it
    assert v.duplicates_applied == 0  # the stale copy is discarded, not a duplicate


def test_entry_under_the_old_epoch_before_the_takeover_is_not_stale() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)
    _acked(h, 1, S0, 9.0)
    h.apply(LedgerEntry(9.5, 1, S0, 1, "a"))

    v = check(h)

    assert v.stale_epoch_accepts == 0
    assert v.acked_lost == 0


def test_acked_message_whose_only_entries_are_stale_is_lost() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)
    _acked(h, 7, S0, 12.0)
    h.apply(LedgerEntry(12.01, 7, S0, 1, "a"))
    h.apply(LedgerEntry(12.5, 7, S0, 1, "a"))

    v = check(h)

    assert v.acked_lost == 1
    assert v.lost_ids == [7]
    assert v.stale_epoch_accepts == 2


def test_acked_message_without_any_entry_is_lost() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    _acked(h, 1, S0, 1.0)
    _acked(h, 2, S0, 2.0)
    h.apply(LedgerEntry(1.01, 1, S0, 1, "a"))

    v = check(h)

    assert v.lost_ids == [2]


def test_unacked_messages_never_count_as_lost() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)
    h.send(1, S0, 5.0)  # never applied, never acknowledged
    h.send(2, S0, 11.0)
    h.apply(LedgerEntry(11.01, 2, S0, 1, "a"))  # applied stale, never acknowledged

    v = check(h)

    assert v.acked == 0
    assert v.acked_lost == 0
    assert v.stale_epoch_accepts == 1


def test_two_kept_entries_for_one_message_are_one_duplicate() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)
    _acked(h, 1, S0, 9.9)
    h.apply(LedgerEntry(9.95, 1, S0, 1, "a"))  # before the takeover: kept
    h.apply(LedgerEntry(10.5, 1, S0, 2, "b"))  # the retry at the new owner: kept too

    v = check(h)

    assert v.duplicates_applied == 1
    assert v.stale_epoch_accepts == 0


def test_three_kept_entries_for_one_message_are_two_duplicates() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    _acked(h, 1, S0, 1.0)
    for at_s in (1.1, 1.2, 1.3):
        h.apply(LedgerEntry(at_s, 1, S0, 1, "a"))

    assert check(h).duplicates_applied == 2


def test_two_sites_under_one_shard_epoch_is_a_dual_owner_epoch() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S1, 1, 0.0)
    _acked(h, 1, S0, 1.0)
    _acked(h, 2, S0, 2.0)
    _acked(h, 3, S1, 3.0)
    h.apply(LedgerEntry(1.01, 1, S0, 1, "a"))
    h.apply(LedgerEntry(2.01, 2, S0, 1, "b"))  # S0 epoch 1 from two sites
    h.apply(LedgerEntry(3.01, 3, S1, 1, "a"))  # S1 epoch 1: one site only

    v = check(h)

    assert v.dual_owner_epochs == 1
    assert v.acked_lost == 0


def test_same_epoch_number_on_two_shards_is_not_a_dual_owner() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S1, 1, 0.0)
    h.apply(LedgerEntry(1.0, 1, S0, 1, "a"))
    h.apply(LedgerEntry(1.0, 2, S1, 1, "b"))

    assert check(h).dual_owner_epochs == 0


def test_commits_recorded_out_of_order_are_judged_by_the_max_epoch_at_that_time() -> None:
    h = History()
    h.commit(S0, 3, 20.0)
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)
    h.apply(LedgerEntry(5.0, 1, S0, 1, "a"))  # epoch 1 current: kept
    h.apply(LedgerEntry(15.0, 2, S0, 1, "a"))  # epoch 2 committed at 10: stale
    h.apply(LedgerEntry(15.0, 3, S0, 2, "b"))  # kept
    h.apply(LedgerEntry(25.0, 4, S0, 2, "b"))  # epoch 3 committed at 20: stale

    v = check(h)

    assert [(e.message_id, e.epoch) for e in v.stale_entries] == [(2, 1), (4, 2)]


def test_a_lower_epoch_committed_later_does_not_lower_the_current_epoch() -> None:
    h = History()
    h.commit(S0, 5, 1.0)
    h.commit(S0, 2, 3.0)  # a late, lower grant: epoch 5 is still the highest
    h.apply(LedgerEntry(4.0, 1, S0, 2, "a"))

    assert check(h).stale_epoch_accepts == 1


def test_entry_at_exactly_the_commit_time_sees_the_new_epoch() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)
    old = LedgerEntry(10.0, 1, S0, 1, "a")
    new = LedgerEntry(10.0, 2, S0, 2, "b")
    h.apply(old)
    h.apply(new)

    assert check(h).stale_entries == [old]


def test_entry_with_no_commit_for_its_shard_is_kept() -> None:
    h = History()
    _acked(h, 1, S0, 1.0)
    h.apply(LedgerEntry(1.01, 1, S0, 1, "a"))

    v = check(h)

    assert (v.stale_epoch_accepts, v.acked_lost) == (0, 0)


def test_send_and_ack_keep_the_first_time() -> None:
    h = History()
    h.send(1, S0, 1.0)
    h.send(1, S1, 2.0)  # a retry: neither the time nor the shard changes
    h.ack(1, 3.0)
    h.ack(1, 4.0)

    assert h.sent == {1: 1.0}
    assert h.message_shard == {1: S0}
    assert h.acked == {1: 3.0}


def test_epoch_at_is_the_largest_epoch_committed_at_or_before() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)

    assert h.epoch_at(S0, -1.0) == 0
    assert h.epoch_at(S0, 9.999) == 1
    assert h.epoch_at(S0, 10.0) == 2
    assert h.epoch_at(S1, 10.0) == 0


def test_epoch_at_agrees_with_check_when_commits_are_recorded_out_of_order() -> None:
    h = History()
    h.commit(S0, 2, 10.0)
    h.commit(S0, 1, 0.0)

    assert h.epoch_at(S0, 5.0) == 1


ledger_entries = st.lists(
    st.builds(
        LedgerEntry,
        at_s=st.floats(0, 100, allow_nan=False),
        message_id=st.integers(1, 8),
        shard=st.sampled_from([S0, S1]),
        epoch=st.integers(1, 4),
        site=st.sampled_from(["a", "b"]),
    ),
    max_size=20,
)
commit_lists = st.lists(
    st.tuples(st.sampled_from([S0, S1]), st.integers(1, 4), st.floats(0, 100, allow_nan=False)),
    max_size=8,
)


@settings(max_examples=60)
@given(entries=ledger_entries, commits=commit_lists, acked=st.sets(st.integers(1, 8)))
def test_verdict_does_not_depend_on_recording_order(
    entries: list[LedgerEntry],
    commits: list[tuple[tuple[str, int], int, float]],
    acked: set[int],
) -> None:
    def verdict(order: random.Random) -> tuple[int, int, int, int, list[int]]:
        h = History()
        for shard, epoch, at_s in order.sample(commits, len(commits)):
            h.commit(shard, epoch, at_s)
        for entry in order.sample(entries, len(entries)):
            h.apply(entry)
        for message_id in sorted(acked):
            h.send(message_id, S0, 0.0)
            h.ack(message_id, 0.1)
        v = check(h)
        return (
            v.acked_lost,
            v.duplicates_applied,
            v.stale_epoch_accepts,
            v.dual_owner_epochs,
            v.lost_ids,
        )

    first = verdict(random.Random(1))

    assert verdict(random.Random(2)) == first
    assert first[0] <= len(acked)
    assert first[2] <= len(entries)


def test_fill_report_copies_the_verdict() -> None:
    h = History()
    h.commit(S0, 1, 0.0)
    h.commit(S0, 2, 10.0)
    _acked(h, 1, S0, 11.0)
    h.apply(LedgerEntry(11.01, 1, S0, 1, "a"))
    h.apply(LedgerEntry(11.02, 2, S0, 1, "b"))
    report = Report()

    verdict = fill_report(report, h, end_s=20.0)

    assert (report.acked, report.acked_lost) == (1, 1)
    assert report.stale_epoch_accepts == verdict.stale_epoch_accepts == 2
    assert report.dual_owner_epochs == 1


# --- unavailability per fault ------------------------------------------------------------


def _event(at_s: float, kind: str, action: str, target: str = "a") -> FaultEvent:
    return FaultEvent(at_s, kind, target, action)


def _message(history: History, message_id: int, sent_s: float, acked_s: float | None) -> None:
    history.send(message_id, S0, sent_s)
    if acked_s is not None:
        history.ack(message_id, acked_s)


def test_each_event_opens_a_window_until_the_next() -> None:
    h = History()
    h.faults = [_event(10.0, "partition", "inject"), _event(20.0, "partition", "heal")]
    _message(h, 1, 5.0, 12.0)  # waiting when the fault began: counts from 10
    _message(h, 2, 11.0, 14.0)  # 3 s in the fault's window
    _message(h, 3, 21.0, 22.0)  # 1 s after the heal

    labelled = unavailability_by_fault(
        h, end_s=60.0, fault_kinds={"partition:heal": "partition_heal"}
    )
    unlabelled = unavailability_by_fault(h, end_s=60.0)

    assert labelled == {"partition": [pytest.approx(3.0)], "partition_heal": [pytest.approx(1.0)]}
    assert unlabelled == {"partition": [pytest.approx(3.0)]}


def test_messages_acked_before_the_first_fault_do_not_count() -> None:
    h = History()
    h.faults = [_event(10.0, "hang", "inject")]
    _message(h, 1, 1.0, 9.0)

    assert unavailability_by_fault(h, end_s=60.0) == {"hang": [0.0]}


def test_a_wait_is_cut_at_the_next_injection_but_not_at_a_heal() -> None:
    h = History()
    h.faults = [
        _event(10.0, "hang", "inject"),
        _event(12.0, "hang", "heal"),
        _event(15.0, "site_crash", "inject"),
        _event(17.0, "site_crash", "heal"),
    ]
    _message(h, 1, 11.0, 20.0)

    result = unavailability_by_fault(h, end_s=60.0)

    # The hang's wait runs past its heal at 12 s and stops at the crash at 15 s.
    assert result == {"hang": [pytest.approx(4.0)], "site_crash": [pytest.approx(5.0)]}


def test_faults_overlapping_another_are_counted_as_double_fault() -> None:
    h = History()
    h.faults = [
        _event(10.0, "partition", "inject"),
        _event(12.0, "hang", "inject", target="b"),  # begins while the partition is on
        _event(14.0, "partition", "heal"),  # ends while the hang is on
        _event(16.0, "hang", "heal", target="b"),  # ends alone
    ]
    _message(h, 1, 10.5, 11.0)
    _message(h, 2, 12.5, 15.0)
    kinds = {"partition:heal": "partition_heal", "hang:heal": "hang_heal"}

    result = unavailability_by_fault(h, end_s=60.0, fault_kinds=kinds)

    assert result == {
        "partition": [pytest.approx(0.5)],
        DOUBLE_FAULT: [pytest.approx(2.5), pytest.approx(1.0)],
        "hang_heal": [0.0],
    }


def test_heal_labels_come_from_the_fault_kinds_mapping() -> None:
    h = History()
    h.faults = [_event(10.0, "site_crash", "inject"), _event(30.0, "site_crash", "heal")]
    _message(h, 1, 11.0, 12.5)
    _message(h, 2, 31.0, 31.25)

    result = unavailability_by_fault(h, end_s=60.0, fault_kinds={"site_crash:heal": "site_return"})

    assert result == {"site_crash": [pytest.approx(1.5)], "site_return": [pytest.approx(0.25)]}


def test_a_message_never_acked_counts_until_the_end() -> None:
    h = History()
    h.faults = [_event(10.0, "partition", "inject"), _event(20.0, "partition", "heal")]
    _message(h, 1, 12.0, None)

    result = unavailability_by_fault(
        h, end_s=50.0, fault_kinds={"partition:heal": "partition_heal"}
    )

    assert result == {"partition": [pytest.approx(38.0)], "partition_heal": [pytest.approx(30.0)]}


def test_no_faults_no_unavailability() -> None:
    h = History()
    _message(h, 1, 1.0, None)

    assert unavailability_by_fault(h, end_s=50.0) == {}


@settings(max_examples=60)
@given(
    injects=st.lists(st.floats(1, 50, allow_nan=False), min_size=1, max_size=5),
    messages=st.lists(
        st.tuples(st.floats(0, 60, allow_nan=False), st.floats(0, 10, allow_nan=False)),
        max_size=10,
    ),
)
def test_one_value_per_injection_each_within_the_run(
    injects: list[float], messages: list[tuple[float, float]]
) -> None:
    end_s = 70.0
    h = History()
    h.faults = [_event(at_s, "hang", "inject") for at_s in injects]
    for i, (sent_s, wait_s) in enumerate(messages):
        _message(h, i, sent_s, sent_s + wait_s)

    result = unavailability_by_fault(h, end_s=end_s)

    values = [v for vs in result.values() for v in vs]
    assert len(values) == len(injects)
    assert all(0.0 <= v <= end_s for v in values)
    longest_wait = max((h.acked[m] - h.sent[m] for m in h.sent), default=0.0)
    assert max(values) <= longest_wait


# --- the report ---------------------------------------------------------------------------


def test_report_json_has_exactly_the_documented_fields() -> None:
    report = Report(
        acked=10,
        acked_lost=1,
        duplicates_applied=2,
        stale_epoch_accepts=3,
        dual_owner_epochs=4,
        max_unavailability_s=1.23456,
        unavailability_s={"partition": [0.5, 1.5, 1.0]},
        shards_per_site={"a": {"eap": 8}, "b": {"eap": 8}},
        faults=[FaultEvent(10.0, "partition", "a", "inject")],
        violations=[Violation("single_writer", 12.34567, "b applied eap/3 under epoch 1")],
    )

    data = report.to_json()

    assert set(data) == REPORT_FIELDS
    assert data["acked"] == 10
    assert data["acked_lost"] == 1
    assert data["duplicates_applied"] == 2
    assert data["stale_epoch_accepts"] == 3
    assert data["dual_owner_epochs"] == 4
    assert data["max_unavailability_s"] == 1.235
    assert data["unavailability_s"] == {"partition": {"p50": 1.0, "p99": 1.5, "max": 1.5, "n": 3}}
    assert data["shards_per_site"] == {"a": {"eap": 8}, "b": {"eap": 8}}
    assert data["faults"] == [
        {"at_s": 10.0, "kind": "partition", "target": "a", "action": "inject"}
    ]
    assert data["violations"] == [
        {"invariant": "single_writer", "at_s": 12.346, "detail": "b applied eap/3 under epoch 1"}
    ]
    assert json.loads(json.dumps(data)) == data
    assert not report.ok


def test_report_extra_fields_are_merged_in() -> None:
    report = Report(extra={"runs": 3, "steps": 1000})

    data = report.to_json()

    assert set(data) == REPORT_FIELDS | {"runs", "steps"}
    assert (data["runs"], data["steps"]) == (3, 1000)
    assert report.ok


def test_unavailability_kinds_are_sorted_in_the_json() -> None:
    report = Report(unavailability_s={"site_crash": [1.0], "hang": [2.0]})

    assert list(report.to_json()["unavailability_s"]) == ["hang", "site_crash"]


def test_percentile_is_nearest_rank() -> None:
    ten = [float(i) for i in range(1, 11)]

    assert percentile(ten, 50) == 5.0
    assert percentile(ten, 51) == 6.0
    assert percentile(ten, 99) == 10.0
    assert percentile(ten, 100) == 10.0
    assert percentile(ten, 10) == 1.0
    assert percentile(ten, 11) == 2.0
    assert percentile(ten, 0) == 1.0
    assert percentile([4.0], 50) == 4.0
    assert percentile([], 50) == 0.0
    hundred = [float(i) for i in range(1, 101)]
    assert percentile(hundred, 50) == 50.0
    assert percentile(hundred, 99) == 99.0


def test_percentile_rank_is_exact_when_q_times_n_is_whole() -> None:
    hundred = [float(i) for i in range(1, 101)]

    assert percentile(hundred, 7) == 7.0


def test_summarize_gives_p50_p99_max_and_n_rounded_to_milliseconds() -> None:
    assert summarize([0.0004, 2.0, 1.23456]) == {"p50": 1.235, "p99": 2.0, "max": 2.0, "n": 3}
    assert summarize([]) == {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
