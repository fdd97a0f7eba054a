"""Leases, self-fencing, the failsafe and the majority: the minority always stops first."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from failover.core.quorum import (
    MIN_FENCE_MARGIN_S,
    LeaseObserver,
    LeaseTiming,
    PeerReport,
    has_majority,
    holder_may_act,
    in_failsafe,
)

TIMING = LeaseTiming()  # renew 0.25, deadline 1.0, duration 1.6, heartbeat 0.2


# --- LeaseTiming -----------------------------------------------------------------------


def test_default_timing_is_valid_and_keeps_the_margin() -> None:
    assert MIN_FENCE_MARGIN_S == 0.5
    assert TIMING.fence_margin_s == pytest.approx(0.6)
    assert TIMING.fence_margin_s >= MIN_FENCE_MARGIN_S
    assert TIMING.failsafe_confirm_s == pytest.approx(0.75)
    assert TIMING.renew_interval_s + TIMING.failsafe_confirm_s <= TIMING.renew_deadline_s


def test_margin_of_exactly_the_minimum_is_allowed() -> None:
    timing = LeaseTiming(renew_deadline_s=1.0, lease_duration_s=1.5)
    assert timing.fence_margin_s == MIN_FENCE_MARGIN_S


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"renew_deadline_s": 1.0, "lease_duration_s": 1.4},
            "lease_duration_s (1.4) must exceed renew_deadline_s (1.0) by at least 0.5 s",
        ),
        (
            {"renew_deadline_s": 2.0, "lease_duration_s": 1.6},
            "lease_duration_s (1.6) must exceed renew_deadline_s (2.0)",
        ),
        (
            {"renew_interval_s": 1.0, "renew_deadline_s": 1.0},
            "need 0 < renew_interval_s (1.0) < renew_deadline_s (1.0)",
        ),
        (
            {"heartbeat_interval_s": 0.75},
            "heartbeat_interval_s (0.75) must be > 0 and shorter than the failsafe "
            "confirmation window (0.750 s)",
        ),
        (
            {"renew_interval_s": 0.9, "heartbeat_interval_s": 0.2},
            "shorter than the failsafe confirmation window (0.100 s)",
        ),
    ],
)
def test_invalid_timing_is_a_clear_value_error(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid lease timing: ") as err:
        LeaseTiming(**kwargs)
    assert message in str(err.value)


TIMING_FIELDS = ("renew_interval_s", "renew_deadline_s", "lease_duration_s", "heartbeat_interval_s")


@pytest.mark.parametrize("name", TIMING_FIELDS)
@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0, "0.0"), (-0.1, "-0.1"), (float("nan"), "nan"), (float("inf"), "inf")],
)
def test_every_timing_field_must_be_a_finite_positive_number(
    name: str, value: float, shown: str
) -> None:
    # Checked before the relations, so the message names only the field itself.
    with pytest.raises(ValueError) as err:
        LeaseTiming(**{name: value})
    assert str(err.value) == (
        f"invalid lease timing: {name} must be a finite number of seconds > 0, got {shown}"
    )


def test_nan_lease_duration_is_rejected() -> None:
    # Used to pass: 'margin < MIN_FENCE_MARGIN_S' is False for NaN.
    with pytest.raises(ValueError, match=r"^invalid lease timing: lease_duration_s must be"):
        LeaseTiming(lease_duration_s=float("nan"))


def test_every_bad_timing_field_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as err:
        LeaseTiming(renew_interval_s=0.0, lease_duration_s=float("inf"))
    assert str(err.value) == (
        "invalid lease timing: renew_interval_s must be a finite number of seconds > 0, "
        "got 0.0; lease_duration_s must be a finite number of seconds > 0, got inf"
    )


def test_every_broken_relation_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as err:
        LeaseTiming(renew_interval_s=1.0, renew_deadline_s=1.0, lease_duration_s=1.2)
    text = str(err.value)
    assert text.startswith("invalid lease timing: need 0 < renew_interval_s (1.0) < ")
    assert "lease_duration_s (1.2) must exceed renew_deadline_s (1.0)" in text
    assert "heartbeat_interval_s (0.2) must be > 0 and shorter" in text


# --- the holder ------------------------------------------------------------------------


def _may_act(now_s: float, last: float | None, **kwargs: object) -> bool:
    store_ok = bool(kwargs.get("store_ok", False))
    peers = kwargs.get("peers", {"b": PeerReport(now_s, store_ok=True)})
    return holder_may_act(
        now_s=now_s,
        last_renew_start_s=last,
        timing=TIMING,
        store_ok=store_ok,
        peers=peers,  # type: ignore[arg-type]
    )


def test_holder_acts_until_renew_deadline_after_the_last_renew_start() -> None:
    assert _may_act(10.0, 10.0)
    assert _may_act(10.5, 10.0)
    assert _may_act(11.0, 10.0)  # exactly the deadline still counts
    assert not _may_act(11.000001, 10.0)
    assert not _may_act(20.0, 10.0)


def test_holder_that_never_renewed_may_not_act() -> None:
    assert not _may_act(0.0, None)
    assert not _may_act(0.0, None, peers={"b": PeerReport(0.0, store_ok=False)})


def test_holder_past_its_deadline_keeps_acting_only_in_failsafe() -> None:
    confirmed = {"b": PeerReport(11.5, store_ok=False)}
    assert _may_act(12.0, 10.0, store_ok=False, peers=confirmed)
    assert not _may_act(12.0, 10.0, store_ok=True, peers=confirmed)


# --- the failsafe ----------------------------------------------------------------------


def _failsafe(now_s: float, store_ok: bool, peers: dict[str, PeerReport | None]) -> bool:
    return in_failsafe(now_s=now_s, timing=TIMING, store_ok=store_ok, peers=peers)


def test_failsafe_needs_the_store_down_and_every_peer_confirming_freshly() -> None:
    fresh_down = PeerReport(9.5, store_ok=False)
    assert _failsafe(10.0, False, {"b": fresh_down})
    assert _failsafe(10.0, False, {"b": fresh_down, "c": PeerReport(9.25, store_ok=False)})


@pytest.mark.parametrize(
    ("store_ok", "peers"),
    [
        (True, {"b": PeerReport(9.9, store_ok=False)}),  # holder still has the store
        (False, {}),  # nobody to confirm
        (False, {"b": None}),  # never heard
        (False, {"b": PeerReport(9.9, store_ok=True)}),  # the peer can reach the store
        (False, {"b": PeerReport(9.24, store_ok=False)}),  # stale: older than 0.75 s
        (False, {"b": PeerReport(9.9, store_ok=False), "c": None}),
        (False, {"b": PeerReport(9.9, store_ok=False), "c": PeerReport(9.9, store_ok=True)}),
        (False, {"b": PeerReport(9.9, store_ok=False), "c": PeerReport(1.0, store_ok=False)}),
    ],
)
def test_no_failsafe_unless_all_peers_freshly_confirm(
    store_ok: bool, peers: dict[str, PeerReport | None]
) -> None:
    assert not _failsafe(10.0, store_ok, peers)
    assert not _may_act(10.0, 8.0, store_ok=store_ok, peers=peers)


def test_failsafe_confirmation_window_boundary() -> None:
    assert _failsafe(10.75, False, {"b": PeerReport(10.0, store_ok=False)})
    assert not _failsafe(10.76, False, {"b": PeerReport(10.0, store_ok=False)})


# --- the observer ----------------------------------------------------------------------


def test_observer_is_blind_before_its_first_read() -> None:
    observer = LeaseObserver(lease_duration_s=1.6)
    assert observer.age_s(5.0) is None
    assert not observer.expired(100.0)


def test_observer_expires_only_after_lease_duration_without_change() -> None:
    observer = LeaseObserver(lease_duration_s=1.6)
    observer.observe(("a", 1, 1), 10.0)
    observer.observe(("a", 1, 1), 11.0)
    assert observer.age_s(11.0) == pytest.approx(1.0)
    assert not observer.expired(11.6)
    assert not observer.expired(11.6 - 1e-9)
    observer.observe(("a", 1, 1), 11.61)
    assert observer.expired(11.61)


def test_a_changed_record_restarts_the_count() -> None:
    observer = LeaseObserver(lease_duration_s=1.6)
    observer.observe(("a", 1, 1), 10.0)
    observer.observe(("a", 1, 2), 11.5)
    assert not observer.expired(12.0)
    assert not observer.expired(13.1)
    assert observer.expired(13.11)
    assert observer.age_s(13.5) == pytest.approx(2.0)


def test_no_lease_record_counts_as_a_record() -> None:
    observer = LeaseObserver(lease_duration_s=1.0)
    observer.observe(None, 0.0)
    assert observer.expired(1.5)
    observer.observe(("a", 1, 1), 1.5)
    assert not observer.expired(2.0)


def test_read_failure_blinds_and_the_next_read_restarts_the_count() -> None:
    observer = LeaseObserver(lease_duration_s=1.6)
    observer.observe(("a", 1, 1), 10.0)
    observer.read_failed()
    assert not observer.expired(12.0)  # never expired while blind
    assert not observer.expired(1000.0)
    observer.observe(("a", 1, 1), 12.0)  # unchanged, but the count restarts here
    assert observer.age_s(12.0) == 0.0
    assert not observer.expired(13.6)
    assert observer.expired(13.61)


def test_repeated_reads_of_the_same_record_do_not_restart_the_count() -> None:
    observer = LeaseObserver(lease_duration_s=1.6)
    for step in range(20):
        observer.observe(("a", 1, 1), 10.0 + step * 0.1)
    assert observer.age_s(11.9) == pytest.approx(1.9)
    assert observer.expired(11.9)


# --- the key property: the minority fences first ----------------------------------------


@dataclass(frozen=True)
class Renewal:
    gap_s: float  # after the previous renewal's start
    apply_delay_s: float  # from start until the store applies it
    # "ok": applied and acknowledged; "lost": never applied;
    # "unknown": applied, but the holder was not told (outcome unknown)
    outcome: str


@st.composite
def timings(draw: st.DrawFn) -> LeaseTiming:
    deadline = draw(st.floats(min_value=0.3, max_value=3.0))
    interval = draw(st.floats(min_value=0.05, max_value=deadline * 0.8))
    duration = draw(st.floats(min_value=deadline, max_value=deadline + 2.0))
    try:
        return LeaseTiming(
            renew_interval_s=interval,
            renew_deadline_s=deadline,
            lease_duration_s=duration,
            heartbeat_interval_s=(deadline - interval) / 2,
        )
    except ValueError:
        reject()


renewals = st.lists(
    st.builds(
        Renewal,
        gap_s=st.floats(min_value=0.01, max_value=4.0),
        apply_delay_s=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=4.0)),
        outcome=st.sampled_from(("ok", "ok", "lost", "unknown")),
    ),
    min_size=1,
    max_size=12,
)
reads = st.lists(
    st.tuples(st.floats(min_value=0.001, max_value=1.0), st.booleans() | st.just(True)),
    min_size=1,
    max_size=40,
)


def _holder_fence_time(
    starts: list[float], acks: list[float | None], timing: LeaseTiming
) -> float | None:
    """When the holder first may not act, asked of holder_may_act along its acknowledgements.

    The holder uses the latest start among the renewals acknowledged so far (the most
    generous reading). After its first fence this session is over for good: the agent
    writes its next lease under a new session, so later acknowledgements no longer count.
    None when the first acknowledgement already came too late: the holder never acted.
    """
    events = sorted(
        (ack, start) for start, ack in zip(starts, acks, strict=True) if ack is not None
    )
    last: float | None = None
    for ack, start in events:
        if not _holder_acts(ack, start if last is None else last, timing):
            break
        last = start if last is None else max(last, start)
    if last is None:
        return None
    fence = last + timing.renew_deadline_s
    assert _holder_acts(fence - 1e-9, last, timing)
    assert not _holder_acts(fence + 1e-6, last, timing)
    return fence


def _holder_acts(now_s: float, last: float, timing: LeaseTiming) -> bool:
    # no peers confirm a store outage: the failsafe cannot keep the holder going
    return holder_may_act(
        now_s=now_s, last_renew_start_s=last, timing=timing, store_ok=False, peers={}
    )


@given(timings(), renewals, reads, st.floats(min_value=0.0, max_value=3.0))
@settings(max_examples=300)
def test_holder_fences_at_least_the_margin_before_the_observer_sees_expiry(
    timing: LeaseTiming,
    plan: list[Renewal],
    read_plan: list[tuple[float, bool]],
    first_read_s: float,
) -> None:
    # the holder's first renewal succeeds, so it does act for a while
    plan = [Renewal(0.0, plan[0].apply_delay_s, "ok"), *plan[1:]]
    starts: list[float] = []
    t = 0.0
    for renewal in plan:
        t += renewal.gap_s
        starts.append(t)
    applied = [
        (start + r.apply_delay_s, k)
        for k, (start, r) in enumerate(zip(starts, plan, strict=True))
        if r.outcome != "lost"
    ]
    acks = [
        start + r.apply_delay_s if r.outcome == "ok" else None
        for start, r in zip(starts, plan, strict=True)
    ]
    fence_s = _holder_fence_time(starts, acks, timing)
    if fence_s is None:
        return  # the holder never acted: nothing it could overlap with

    def record_at(now_s: float) -> tuple[str, int] | None:
        seen = [(at, k) for at, k in applied if at <= now_s]
        return ("a", max(seen)[1]) if seen else None

    # reads from the plan, then reads every renew interval until well past any expiry
    times: list[tuple[float, bool]] = []
    now = first_read_s
    for gap, ok in read_plan:
        now += gap
        times.append((now, ok))
    horizon = max(now, *(at for at, _ in applied)) + timing.lease_duration_s
    horizon += 3 * timing.renew_interval_s
    while now < horizon:
        now += timing.renew_interval_s
        times.append((now, True))

    # Seeing no lease at all expire says nothing about this holder: nothing is granted to
    # its session before the controller has seen its lease. So count expiry of a record.
    observer = LeaseObserver(lease_duration_s=timing.lease_duration_s)
    expired_at: float | None = None
    seen: tuple[str, int] | None = None
    for now, ok in times:
        if ok:
            seen = record_at(now)
            observer.observe(seen, now)
        else:
            observer.read_failed()
            assert not observer.expired(now)
        if observer.expired(now) and seen is not None:
            expired_at = now
            break
    assert expired_at is not None, "the observer must eventually see the lease expire"
    assert expired_at - fence_s >= MIN_FENCE_MARGIN_S
    assert expired_at - fence_s > timing.fence_margin_s


def test_key_property_example_late_renewal_with_slow_store() -> None:
    """Renewals at 0 and 0.9 s; the second takes 0.5 s to land. Fence 1.9 s, expiry > 2.99 s."""
    observer = LeaseObserver(lease_duration_s=TIMING.lease_duration_s)
    fence_s = 0.9 + TIMING.renew_deadline_s
    assert _holder_acts(fence_s, 0.9, TIMING)
    observer.observe(("a", 1, 1), 0.1)
    observer.observe(("a", 1, 1), 1.3)  # the second renewal is not applied yet
    observer.observe(("a", 1, 2), 1.45)  # applied at 1.4, seen at 1.45
    assert not observer.expired(3.05)
    assert observer.expired(3.06)
    assert 3.06 - fence_s >= MIN_FENCE_MARGIN_S


# --- majority --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("votes", "total", "expected"),
    [(2, 3, True), (3, 3, True), (1, 3, False), (0, 3, False), (1, 2, False), (2, 2, True)],
)
def test_majority(votes: int, total: int, expected: bool) -> None:
    assert has_majority(votes, total) is expected


def test_no_failsafe_while_the_witness_can_reach_the_store() -> None:
    """Found by `bfm chaos --scenario flap-a`: b's renewal failed on the member a's flapping
    link had cut (OutcomeUnknown), b's heartbeats said "store down", a served on in
    failsafe, while the controller at w had the store all along and moved a's shards.
    Every other site must confirm, the witness too."""
    timing = LeaseTiming()
    down = PeerReport(10.0, store_ok=False)
    assert in_failsafe(now_s=10.1, timing=timing, store_ok=False, peers={"b": down, "w": down})
    assert not in_failsafe(now_s=10.1, timing=timing, store_ok=False, peers={"b": down, "w": None})
    assert not in_failsafe(
        now_s=10.1, timing=timing, store_ok=False, peers={"b": down, "w": PeerReport(10.0, True)}
    )
