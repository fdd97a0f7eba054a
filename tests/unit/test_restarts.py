"""The restart policy: doubling backoff within the crash window, forgetting, giving up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.core.restarts import CrashHistory, RestartTiming

TIMING = RestartTiming()  # 0.5 s doubling to 8 s; give up at the 5th crash within 60 s


def test_defaults_are_the_documented_ones() -> None:
    assert TIMING.first_backoff_s == 0.5
    assert TIMING.max_backoff_s == 8.0
    assert TIMING.crash_window_s == 60.0
    assert TIMING.give_up_after_crashes == 5


def test_backoff_doubles_per_crash_within_the_window() -> None:
    history = CrashHistory(TIMING)
    decisions = [history.crashed(100.0 + i) for i in range(4)]
    assert [d.backoff_s for d in decisions] == [0.5, 1.0, 2.0, 4.0]
    assert [d.crashes for d in decisions] == [1, 2, 3, 4]
    assert [d.restart_at_s for d in decisions] == [100.5, 102.0, 104.0, 107.0]
    assert not any(d.give_up for d in decisions)
    assert not history.given_up


def test_backoff_is_capped() -> None:
    timing = RestartTiming(first_backoff_s=1.0, max_backoff_s=3.0, give_up_after_crashes=10)
    history = CrashHistory(timing)
    assert [history.crashed(float(i)).backoff_s for i in range(5)] == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_gives_up_at_the_nth_crash_within_the_window() -> None:
    history = CrashHistory(TIMING)
    for i in range(4):
        assert not history.crashed(10.0 * i).give_up
    fifth = history.crashed(40.0)
    assert fifth.give_up
    assert fifth.crashes == 5
    assert fifth.restart_at_s is None
    assert history.given_up


def test_crashes_older_than_the_window_are_forgotten() -> None:
    history = CrashHistory(TIMING)
    for i in range(4):
        history.crashed(float(i))
    # 61 s after the last one: all four are outside the window
    later = history.crashed(3.0 + 61.0)
    assert later.crashes == 1
    assert later.backoff_s == TIMING.first_backoff_s
    assert not later.give_up


def test_a_crash_exactly_window_old_still_counts() -> None:
    history = CrashHistory(RestartTiming(crash_window_s=10.0, give_up_after_crashes=2))
    history.crashed(0.0)
    assert history.crashed(10.0).give_up


def test_reset_forgets_the_history_and_the_give_up() -> None:
    history = CrashHistory(RestartTiming(give_up_after_crashes=2))
    history.crashed(0.0)
    assert history.crashed(1.0).give_up
    history.reset()
    assert not history.given_up
    assert history.crashes(1.0) == 0
    assert history.crashed(2.0).crashes == 1


def test_crash_times_must_not_go_back() -> None:
    history = CrashHistory(TIMING)
    history.crashed(5.0)
    with pytest.raises(ValueError, match="must not go back"):
        history.crashed(4.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first_backoff_s": 0.0}, "first_backoff_s"),
        ({"max_backoff_s": float("inf")}, "max_backoff_s"),
        ({"crash_window_s": -1.0}, "crash_window_s"),
        ({"first_backoff_s": 2.0, "max_backoff_s": 1.0}, "at least first_backoff_s"),
        ({"give_up_after_crashes": 0}, "give_up_after_crashes"),
    ],
)
def test_invalid_timing_is_refused_with_the_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestartTiming(**kwargs)  # type: ignore[arg-type]


timings = st.builds(
    RestartTiming,
    first_backoff_s=st.floats(0.01, 5.0),
    max_backoff_s=st.floats(5.0, 60.0),
    crash_window_s=st.floats(1.0, 300.0),
    give_up_after_crashes=st.integers(1, 8),
)
gaps = st.lists(st.floats(0.0, 400.0), min_size=1, max_size=30)


@given(timings, gaps)
def test_gives_up_exactly_when_the_window_holds_n_crashes(
    timing: RestartTiming, gaps_s: list[float]
) -> None:
    history = CrashHistory(timing)
    now_s, times = 0.0, []
    for gap_s in gaps_s:
        now_s += gap_s
        times.append(now_s)
        decision = history.crashed(now_s)
        in_window = sum(1 for t in times if now_s - t <= timing.crash_window_s)
        assert decision.crashes == in_window
        if decision.give_up:
            assert in_window >= timing.give_up_after_crashes
            assert decision.restart_at_s is None
            return  # the supervisor restarts nothing after giving up
        assert in_window < timing.give_up_after_crashes
        assert decision.restart_at_s == now_s + decision.backoff_s
        assert timing.first_backoff_s <= decision.backoff_s <= timing.max_backoff_s
        assert decision.backoff_s == min(
            timing.first_backoff_s * 2 ** (in_window - 1), timing.max_backoff_s
        )


@given(timings, st.integers(1, 30))
def test_backoff_never_shrinks_as_crashes_add_up(timing: RestartTiming, crashes: int) -> None:
    backoffs = [timing.backoff_s(n) for n in range(1, crashes + 1)]
    assert backoffs == sorted(backoffs)
    assert backoffs[-1] <= timing.max_backoff_s


@given(timings, st.integers(1, 20))
def test_crashes_further_apart_than_the_window_never_give_up_unless_n_is_1(
    timing: RestartTiming, count: int
) -> None:
    history = CrashHistory(timing)
    for i in range(count):
        decision = history.crashed(i * (timing.crash_window_s + 1.0))
        assert decision.crashes == 1
        assert decision.give_up == (timing.give_up_after_crashes == 1)
