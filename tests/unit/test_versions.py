"""Component versions and health reports (failover.core.versions)."""

from __future__ import annotations

import pytest

from failover.core.versions import (
    LATENCY_BOUNDS_S,
    ComponentHealth,
    check_version,
    fails_after_ready,
    latency_bucket,
    quantile_s,
)

BUCKETS = len(LATENCY_BOUNDS_S) + 1


@pytest.mark.parametrize("text", ["1.0.0", "2.0.0+fail-after-ready", "12.6", "v1_2-rc.1"])
def test_versions_accepted(text: str) -> None:
    assert check_version(text) == text


@pytest.mark.parametrize("text", ["", " 1.0", "1.0 ", "-1", "a" * 65, "1/2"])
def test_bad_versions_are_refused_with_the_fix(text: str) -> None:
    with pytest.raises(ValueError, match=r"for example 1\.4\.0"):
        check_version(text)


def test_only_the_build_tag_makes_a_failing_version() -> None:
    assert fails_after_ready("2.0.0+fail-after-ready")
    assert fails_after_ready("2.0.0+x.fail-after-ready")
    assert not fails_after_ready("2.0.0-fail-after-ready")
    assert not fails_after_ready("2.0.0")


def test_health_round_trip_and_growth() -> None:
    counts = (3,) + (0,) * (BUCKETS - 2) + (1,)
    health = ComponentHealth("1.0.0", 4, 1, counts)
    assert ComponentHealth.from_doc(health.to_doc()) == health
    later = ComponentHealth("1.0.0", 10, 2, (8,) + (0,) * (BUCKETS - 2) + (2,))
    grown = later.minus(health)
    assert (grown.handled, grown.errors) == (6, 1)
    assert grown.latency_counts[0] == 5 and grown.latency_counts[-1] == 1
    restarted = ComponentHealth("1.0.0", 2, 0)  # counters went down: a new process
    assert restarted.minus(health) == restarted


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"version": "1.0"},  # no latency_counts
        {"version": "1.0", "handled": 0, "errors": 0, "latency_counts": 5},
        {"version": "1.0", "latency_counts": [0] * (BUCKETS - 1)},
        {"version": "1.0", "handled": -1, "latency_counts": [0] * BUCKETS},
        {"version": "1.0", "errors": True, "latency_counts": [0] * BUCKETS},
        {"version": "1.0", "latency_counts": [0.5] * BUCKETS},
        {"version": "", "latency_counts": [0] * BUCKETS},
    ],
)
def test_malformed_health_is_a_value_error(doc: object) -> None:
    with pytest.raises(ValueError):
        ComponentHealth.from_doc(doc)  # type: ignore[arg-type]


def test_missing_counters_are_malformed() -> None:
    with pytest.raises(ValueError, match="must be given"):
        ComponentHealth.from_doc({"version": "1.0", "errors": 0, "latency_counts": [0] * BUCKETS})


def test_buckets_and_quantiles() -> None:
    assert latency_bucket(0.0) == 0
    assert latency_bucket(LATENCY_BOUNDS_S[-1]) == BUCKETS - 2
    assert latency_bucket(1e6) == BUCKETS - 1
    counts = [0] * BUCKETS
    counts[latency_bucket(0.003)] = 99
    counts[latency_bucket(0.3)] = 1
    assert quantile_s(counts, 0.99) == LATENCY_BOUNDS_S[0]
    assert quantile_s(counts, 1.0) == 0.5
    assert quantile_s([0] * BUCKETS, 0.99) == 0.0
    counts[-1] = 1000
    assert quantile_s(counts, 0.99) == float("inf")
