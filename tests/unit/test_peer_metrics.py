"""The BFM side of the peer comparison: time until the survivor acknowledges a's work."""

from __future__ import annotations

from typing import Any

from failover.chaos.peer_metrics import ratio, survivor_recovery

FAULT_S = 100.0


def _msg(n: int, shard: int, sent_s: float, acked_s: float | None, site: str) -> list[Any]:
    out: list[Any] = [
        {"op": "send", "id": f"m{n}", "component": "eap", "shard": shard, "t": sent_s}
    ]
    if acked_s is not None:
        out.append({"op": "ack", "id": f"m{n}", "t": acked_s, "site": site, "epoch": 1})
    return out


def test_the_longest_and_median_wait_over_the_shards_the_failed_site_served() -> None:
    records = [
        *_msg(1, 0, 99.0, 99.1, "a"),  # shard 0: a's
        *_msg(2, 1, 99.0, 99.1, "a"),  # shard 1: a's
        *_msg(3, 2, 99.0, 99.1, "b"),  # shard 2: b's all along: not counted
        *_msg(4, 0, 100.5, 101.5, "b"),  # shard 0 back at b after 1.5 s
        *_msg(5, 1, 100.5, 102.0, "b"),  # shard 1 after 2.0 s
        *_msg(6, 1, 100.6, 103.0, "b"),  # a later ack changes nothing
        *_msg(7, 2, 100.2, 100.3, "b"),
        {"op": "refused", "id": "m5", "t": 100.9, "router": 0, "reason": "not-owner"},
    ]
    got = survivor_recovery(records, FAULT_S)
    assert (got.longest_s, got.median_s, got.shards, got.not_recovered) == (2.0, 1.75, 2, 0)


def test_a_shard_never_acknowledged_by_the_survivor_is_not_recovered() -> None:
    records = [
        *_msg(1, 0, 99.0, 99.1, "a"),
        *_msg(2, 1, 99.0, 99.1, "a"),
        *_msg(3, 0, 100.5, 101.0, "b"),
        *_msg(4, 1, 100.5, 104.0, "a"),  # only a again (it came back): not the survivor
    ]
    got = survivor_recovery(records, FAULT_S)
    assert (got.longest_s, got.median_s, got.not_recovered) == (None, 1.0, 1)


def test_the_owner_at_the_fault_is_the_last_acknowledger_before_it() -> None:
    records = [
        *_msg(1, 0, 90.0, 90.1, "b"),
        *_msg(2, 0, 95.0, 95.1, "a"),  # moved to a before the fault
        *_msg(3, 0, 100.1, 100.9, "b"),
    ]
    assert survivor_recovery(records, FAULT_S).longest_s == 0.9


def test_ratio_is_bfm_over_sentinel_and_none_when_either_is_missing() -> None:
    assert ratio(1.0, 2.0) == 0.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None
