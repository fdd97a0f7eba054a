"""Failure detection: probe hysteresis, site health from lease age, hand-back stability."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.detector import (
    ComponentDetector,
    DetectorTiming,
    Health,
    Stability,
    site_health,
)

TIMING = DetectorTiming()  # suspect after 1, down after 3, up after 3; hold-off 10 s .. 80 s


def _up_detector(timing: DetectorTiming = TIMING) -> ComponentDetector:
    return ComponentDetector(timing, initial=Health.UP)


# --- ComponentDetector -----------------------------------------------------------------


def test_detector_starts_down_by_default() -> None:
    assert ComponentDetector(TIMING).health is Health.DOWN


def test_exited_process_is_down_at_once() -> None:
    detector = _up_detector()
    assert detector.probe(ok=False, exited=True) is Health.DOWN
    assert detector.health is Health.DOWN
    # ``exited`` wins even over a probe that claims ok
    detector = _up_detector()
    assert detector.probe(ok=True, exited=True) is Health.DOWN


def test_failed_probes_make_it_suspect_then_down() -> None:
    detector = _up_detector()
    assert detector.probe(ok=False) is Health.SUSPECT
    assert detector.probe(ok=False) is Health.SUSPECT
    assert detector.probe(ok=False) is Health.DOWN
    assert detector.probe(ok=False) is Health.DOWN


def test_thresholds_are_configurable() -> None:
    timing = DetectorTiming(suspect_after_failures=2, down_after_failures=4, up_after_successes=2)
    detector = _up_detector(timing)
    assert [detector.probe(ok=False) for _ in range(5)] == [
        Health.UP,
        Health.SUSPECT,
        Health.SUSPECT,
        Health.DOWN,
        Health.DOWN,
    ]
    assert [detector.probe(ok=True) for _ in range(2)] == [Health.DOWN, Health.UP]


def test_suspect_returns_to_up_on_one_good_probe() -> None:
    detector = _up_detector()
    detector.probe(ok=False)
    detector.probe(ok=False)
    assert detector.health is Health.SUSPECT
    assert detector.probe(ok=True) is Health.UP
    # the failure count starts over
    assert detector.probe(ok=False) is Health.SUSPECT
    assert detector.probe(ok=False) is Health.SUSPECT
    assert detector.probe(ok=False) is Health.DOWN


def test_down_needs_up_after_successes_good_probes_in_a_row() -> None:
    detector = ComponentDetector(TIMING)
    assert detector.probe(ok=True) is Health.DOWN
    assert detector.probe(ok=True) is Health.DOWN
    assert detector.probe(ok=False) is Health.DOWN  # a failure breaks the run, stays down
    assert detector.probe(ok=True) is Health.DOWN
    assert detector.probe(ok=True) is Health.DOWN
    assert detector.probe(ok=True) is Health.UP


def test_after_an_exit_a_restart_needs_the_full_run_of_good_probes() -> None:
    detector = _up_detector()
    detector.probe(ok=True)
    detector.probe(ok=False, exited=True)
    assert [detector.probe(ok=True) for _ in range(3)] == [Health.DOWN, Health.DOWN, Health.UP]


@given(st.lists(st.sampled_from(("ok", "fail", "exit")), max_size=40))
@settings(max_examples=100)
def test_detector_matches_its_definition(probes: list[str]) -> None:
    """Down only by exit or 3 failures in a row; up from down only after 3 good in a row."""
    detector = _up_detector()
    health, failures, successes = Health.UP, 0, 0
    for p in probes:
        if p == "exit":
            health, failures, successes = Health.DOWN, 3, 0
        elif p == "ok":
            failures, successes = 0, successes + 1
            if health is not Health.DOWN or successes >= 3:
                health = Health.UP
        else:
            failures, successes = failures + 1, 0
            if failures >= 3:
                health = Health.DOWN
            elif health is not Health.DOWN:
                health = Health.SUSPECT
        assert detector.probe(ok=p == "ok", exited=p == "exit") is health


# --- site health from the lease age ----------------------------------------------------


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [
        (None, Health.DOWN),
        (0.0, Health.UP),
        (0.5, Health.UP),  # exactly two renew intervals
        (0.51, Health.SUSPECT),
        (1.6, Health.SUSPECT),  # exactly the lease duration: not expired yet
        (1.61, Health.DOWN),
    ],
)
def test_site_health_thresholds(age_s: float | None, expected: Health) -> None:
    assert site_health(age_s, renew_interval_s=0.25, lease_duration_s=1.6) is expected


# --- Stability: the hand-back hold-off --------------------------------------------------


def test_a_site_never_down_is_stable_as_soon_as_it_is_up() -> None:
    stability = Stability(TIMING)
    assert not stability.stable(0.0)
    assert not stability.up
    assert stability.holdoff_s() == 0.0  # nothing failed: no hold-off ahead
    stability.update(up=True, now_s=0.0)
    assert stability.up
    assert stability.stable(0.0)
    assert stability.holdoff_s() == 0.0
    stability.update(up=True, now_s=5.0)
    assert stability.stable(5.0)


def test_after_a_down_it_needs_the_hold_off_of_continuous_up() -> None:
    stability = Stability(TIMING)
    stability.update(up=True, now_s=0.0)
    stability.update(up=False, now_s=5.0)
    assert not stability.stable(5.0)
    assert not stability.up
    assert stability.holdoff_s() == 10.0  # the next up period's
    stability.update(up=True, now_s=7.0)
    assert stability.holdoff_s() == 10.0
    assert not stability.stable(16.9)
    assert stability.stable(17.0)
    # going down again restarts the count
    stability.update(up=False, now_s=18.0)
    assert not stability.stable(18.0)
    assert stability.holdoff_s() == 20.0
    stability.update(up=True, now_s=19.0)
    assert not stability.stable(29.0)  # now two downs: 20 s hold-off
    assert not stability.stable(38.9)
    assert stability.stable(39.0)


def test_repeated_down_updates_count_as_one_failure() -> None:
    stability = Stability(TIMING)
    stability.update(up=True, now_s=0.0)
    for t in range(1, 10):
        stability.update(up=False, now_s=float(t))
    assert stability.holdoff_s() == 10.0
    stability.update(up=True, now_s=10.0)
    assert stability.holdoff_s() == 10.0
    assert not stability.stable(19.9)
    assert stability.stable(20.0)


def test_up_updates_while_up_keep_the_start_of_the_up_period() -> None:
    stability = Stability(TIMING)
    stability.update(up=True, now_s=0.0)
    stability.update(up=False, now_s=1.0)
    for t in range(2, 13):
        stability.update(up=True, now_s=float(t))
        assert stability.stable(float(t)) is (t >= 12)
    assert stability.stable(12.0)


def test_hold_off_doubles_per_extra_down_and_is_capped() -> None:
    stability = Stability(TIMING)
    stability.update(up=True, now_s=0.0)
    expected = [10.0, 20.0, 40.0, 80.0, 80.0, 80.0]
    for n, holdoff in enumerate(expected, start=1):
        stability.update(up=False, now_s=float(2 * n))
        stability.update(up=True, now_s=float(2 * n + 1))
        assert stability.holdoff_s() == holdoff
        assert not stability.stable(2 * n + 1 + holdoff - 0.01)
        assert stability.stable(2 * n + 1 + holdoff)


def _flapped_twice() -> Stability:
    stability = Stability(TIMING)
    stability.update(up=True, now_s=0.0)
    stability.update(up=False, now_s=10.0)
    stability.update(up=True, now_s=11.0)
    stability.update(up=False, now_s=20.0)
    stability.update(up=True, now_s=21.0)
    assert stability.holdoff_s() == 20.0
    return stability


def test_the_hold_off_is_fixed_when_the_site_comes_up() -> None:
    stability = _flapped_twice()
    # the downs leaving the flap window later do not shorten the running hold-off
    stability.update(up=True, now_s=310.5)
    stability.update(up=True, now_s=320.5)
    assert stability.holdoff_s() == 20.0
    assert stability.stable(41.0)


def test_downs_within_the_flap_window_before_coming_up_count() -> None:
    stability = _flapped_twice()
    stability.update(up=False, now_s=309.0)
    stability.update(up=True, now_s=310.0)  # the down at 10 s is exactly 300 s old: in
    assert stability.holdoff_s() == 40.0
    assert not stability.stable(349.9)
    assert stability.stable(350.0)


def test_old_downs_leave_the_flap_window() -> None:
    stability = _flapped_twice()
    stability.update(up=False, now_s=309.0)
    stability.update(up=True, now_s=310.5)  # the down at 10 s is out, 20 s and 309 s in
    assert stability.holdoff_s() == 20.0
    stability.update(up=False, now_s=400.0)
    stability.update(up=True, now_s=610.0)  # the down at 309 s is 301 s old: only 400 s left
    assert stability.holdoff_s() == 10.0
    assert not stability.stable(619.9)
    assert stability.stable(620.0)


def _holdoff(failures: int) -> float:
    return 0.0 if failures == 0 else min(10.0 * 2 ** (failures - 1), 80.0)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=200.0), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    st.floats(min_value=0.0, max_value=200.0),
)
@settings(max_examples=100)
def test_stable_means_up_for_the_hold_off_since_coming_up(
    steps: list[tuple[float, bool]], probe_gap_s: float
) -> None:
    stability = Stability(TIMING)
    now = 0.0
    up_since: float | None = None
    seen = False
    failures: list[float] = []  # every up -> down, and a first sighting down
    holdoff = 0.0
    for gap, up in steps:
        now += gap
        stability.update(up=up, now_s=now)
        if up and up_since is None:
            up_since = now
            in_window = sum(1 for d in failures if now - d <= TIMING.flap_window_s)
            # the failure it recovers from always counts, however long ago it began
            holdoff = _holdoff(max(in_window, 1 if failures else 0))
        elif not up and (up_since is not None or not seen):
            up_since = None
            failures.append(now)
        seen = True
        assert stability.up is (up_since is not None)
        if up_since is None:
            # while down: at least the hold-off it would get if it came up now, never stable
            in_window = sum(1 for d in failures if now - d <= TIMING.flap_window_s)
            assert stability.holdoff_s() >= _holdoff(max(in_window, 1))
            assert not stability.stable(now + probe_gap_s)
        else:
            assert stability.holdoff_s() == holdoff
            later = now + probe_gap_s
            assert stability.stable(later) is (later - up_since >= holdoff)


def test_a_site_first_seen_down_still_waits_the_hold_off() -> None:
    # Used to be stable at once: a down was only recorded after an up.
    stability = Stability(TIMING)
    stability.update(up=False, now_s=0.0)
    assert stability.holdoff_s() == 10.0
    stability.update(up=False, now_s=0.5)  # still the same failure
    stability.update(up=True, now_s=1.0)
    assert stability.holdoff_s() == 10.0
    assert not stability.stable(1.0)
    assert not stability.stable(10.9)
    assert stability.stable(11.0)


@pytest.mark.parametrize("first_seen_down", [False, True])
def test_a_site_down_for_longer_than_the_flap_window_still_waits_the_hold_off(
    first_seen_down: bool,
) -> None:
    stability = Stability(TIMING)
    if not first_seen_down:
        stability.update(up=True, now_s=0.0)
    stability.update(up=False, now_s=10.0)
    stability.update(up=False, now_s=200.0)
    stability.update(up=True, now_s=400.0)  # down for 390 s
    assert stability.holdoff_s() == 10.0
    assert not stability.stable(400.0)
    assert stability.stable(410.0)


def test_while_down_the_next_hold_off_ignores_downs_already_outside_the_window() -> None:
    stability = Stability(TIMING)
    stability.update(up=True, now_s=0.0)
    stability.update(up=False, now_s=10.0)
    stability.update(up=True, now_s=11.0)
    stability.update(up=False, now_s=400.0)  # the down at 10 s is 390 s old already
    assert stability.holdoff_s() == 10.0
    stability.update(up=True, now_s=401.0)
    assert stability.holdoff_s() == 10.0  # what the next up period really gets


# --- DetectorTiming validation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suspect_after_failures": 0}, "need 1 <= suspect_after_failures <= down_after_failures"),
        ({"suspect_after_failures": 4, "down_after_failures": 3}, "suspect_after_failures <="),
        ({"up_after_successes": 0}, "up_after_successes must be >= 1"),
        ({"handback_holdoff_s": -1.0}, "need 0 <= handback_holdoff_s <= max_holdoff_s"),
        ({"handback_holdoff_s": 100.0}, "need 0 <= handback_holdoff_s <= max_holdoff_s"),
        ({"handback_holdoff_s": float("nan")}, "handback_holdoff_s"),
    ],
)
def test_invalid_detector_timing_is_a_value_error(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as err:
        DetectorTiming(**kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_equal_thresholds_are_valid() -> None:
    timing = DetectorTiming(
        suspect_after_failures=2,
        down_after_failures=2,
        handback_holdoff_s=5.0,
        max_holdoff_s=5.0,
    )
    detector = _up_detector(timing)
    assert detector.probe(ok=False) is Health.UP
    assert detector.probe(ok=False) is Health.DOWN


# Both used to be accepted; a short flap window forgot a down before its hold-off ended.
@pytest.mark.parametrize("name", ["probe_interval_s", "flap_window_s"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0, "0.0"), (-0.1, "-0.1"), (float("nan"), "nan"), (float("inf"), "inf")],
)
def test_detector_timing_rejects_intervals_that_are_not_finite_and_positive(
    name: str, value: float, shown: str
) -> None:
    with pytest.raises(ValueError) as err:
        DetectorTiming(**{name: value})  # type: ignore[arg-type]
    assert str(err.value) == f"{name} must be a finite number of seconds > 0, got {shown}"


@pytest.mark.parametrize(
    ("flap_window_s", "max_holdoff_s"), [(5.0, 80.0), (79.9, 80.0), (10.0, 20.0)]
)
def test_a_flap_window_shorter_than_the_longest_hold_off_is_rejected(
    flap_window_s: float, max_holdoff_s: float
) -> None:
    with pytest.raises(ValueError) as err:
        DetectorTiming(
            handback_holdoff_s=10.0, max_holdoff_s=max_holdoff_s, flap_window_s=flap_window_s
        )
    assert str(err.value) == (
        f"flap_window_s ({flap_window_s}) must be at least max_holdoff_s ({max_holdoff_s}), "
        "or a failure would be forgotten before its hold-off"
    )


def test_flap_window_of_the_longest_hold_off_never_shortens_it() -> None:
    timing = DetectorTiming(handback_holdoff_s=10.0, max_holdoff_s=10.0, flap_window_s=10.0)
    stability = Stability(timing)
    stability.update(up=True, now_s=0.0)
    stability.update(up=False, now_s=1.0)
    stability.update(up=True, now_s=2.0)
    stability.update(up=True, now_s=11.5)  # the down is now outside the 10 s window
    assert not stability.stable(11.5)  # up for 9.5 s only; the hold-off is 10 s
    assert stability.stable(12.0)
