"""Fault schedules: their JSON form, random generation and shrinking."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.chaos.sim_faults import FAULT_KINDS, Fault, random_schedule, shrink
from failover.chaos.sim_world import SimConfig
from failover.core.topology import default_topology

TOPOLOGY = default_topology()
CONFIG = SimConfig()
SCHEDULE_ARGS: dict[str, Any] = {
    "duration_s": CONFIG.duration_s,
    "min_faults": CONFIG.min_faults,
    "quiet_tail_s": CONFIG.quiet_tail_s,
}


def _schedule(seed: int, **overrides: Any) -> list[Fault]:
    return random_schedule(random.Random(seed), TOPOLOGY, **{**SCHEDULE_ARGS, **overrides})


# --- JSON ----------------------------------------------------------------------------------

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0.001, max_value=100.0, allow_nan=False)
plain_faults = st.builds(
    Fault,
    at_s=finite,
    kind=st.sampled_from([k for k in FAULT_KINDS if k != "flapping"]),
    target=st.sampled_from(["a", "b", "w", "a/eap", "a-b", "b>w", "store"]),
    duration_s=positive,
)
flapping_faults = st.builds(
    Fault,
    at_s=finite,
    kind=st.just("flapping"),
    target=st.sampled_from(["a", "b", "w"]),
    duration_s=positive,
    flap_down_s=positive,
    flap_up_s=positive,
)


@settings(max_examples=80)
@given(fault=st.one_of(plain_faults, flapping_faults))
def test_fault_json_round_trip(fault: Fault) -> None:
    text = json.dumps(fault.to_json())

    assert Fault.from_json(json.loads(text)) == fault


def test_fault_json_field_names() -> None:
    fault = Fault(10.0, "flapping", "b", 30.0, flap_down_s=1.0, flap_up_s=2.0)

    assert fault.to_json() == {
        "at_s": 10.0,
        "kind": "flapping",
        "target": "b",
        "duration_s": 30.0,
        "flap_down_s": 1.0,
        "flap_up_s": 2.0,
    }


def test_fault_from_json_takes_numbers_as_text_or_int_and_defaults_flaps() -> None:
    fault = Fault.from_json({"at_s": 10, "kind": "hang", "target": "b", "duration_s": "2.5"})

    assert fault == Fault(10.0, "hang", "b", 2.5)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"kind": "hang", "target": "b", "duration_s": 1.0}, ["malformed fault", "at_s"]),
        (
            {"at_s": "soon", "kind": "hang", "target": "b", "duration_s": 1.0},
            ["malformed fault", "soon"],
        ),
        ({"at_s": 1.0, "kind": "hang", "target": "b", "duration_s": None}, ["malformed fault"]),
        (["hang", "b"], ["malformed fault"]),
        ("hang b", ["malformed fault"]),
        (
            {"at_s": 1.0, "kind": "meteor", "target": "a", "duration_s": 1.0},
            ["unknown fault kind 'meteor'", "site_crash", "flapping"],
        ),
        (
            {"at_s": 1.0, "kind": "flapping", "target": "a", "duration_s": 10.0},
            ["flap_down_s", "flap_up_s"],
        ),
        (
            {"at_s": 1.0, "kind": "flapping", "target": "a", "duration_s": 10.0, "flap_down_s": 1},
            ["flap_up_s > 0"],
        ),
    ],
)
def test_bad_fault_json_is_a_value_error_saying_what_is_wrong(data: Any, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        Fault.from_json(data)

    message = str(info.value)
    for word in words:
        assert word in message
    assert "\n" not in message


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        Fault.from_json({"at_s": 10.0, "kind": "site_crash", "target": "a", "duration_s": -5})


def test_non_finite_time_is_refused() -> None:
    with pytest.raises(ValueError, match="at_s"):
        Fault.from_json({"at_s": "nan", "kind": "hang", "target": "a", "duration_s": 1.0})


# --- random schedules -------------------------------------------------------------------------


def test_random_schedule_is_deterministic_for_a_seed() -> None:
    assert _schedule(11) == _schedule(11)
    assert _schedule(11) != _schedule(12)


@pytest.mark.parametrize("seed", range(10))
def test_random_schedule_fits_the_run_and_is_valid(seed: int) -> None:
    faults = _schedule(seed)
    last_end_s = CONFIG.duration_s - CONFIG.quiet_tail_s

    assert len(faults) >= CONFIG.min_faults
    starts = [f.at_s for f in faults]
    assert starts == sorted(starts)
    for f in faults:
        assert f.at_s > 0
        assert f.duration_s > 0
        assert f.at_s + f.duration_s <= last_end_s
        assert Fault.from_json(f.to_json()) == f  # every generated fault is valid JSON input
        _assert_target_fits(f)


def _assert_target_fits(fault: Fault) -> None:
    sites, workers = TOPOLOGY.site_names, TOPOLOGY.workers
    if fault.kind == "component_crash":
        site, component = fault.target.split("/")
        assert site in workers
        assert component in TOPOLOGY.components
    elif fault.kind in ("link_cut", "one_way_cut"):
        x, y = fault.target.split("-" if fault.kind == "link_cut" else ">")
        assert {x, y} <= set(sites)
        assert x != y
    elif fault.kind == "store_outage":
        assert fault.target == "store"
    else:
        assert fault.target in sites
    if fault.kind == "flapping":
        assert fault.flap_down_s > 0
        assert fault.flap_up_s > 0


def test_random_schedule_honours_a_larger_min_faults() -> None:
    assert len(_schedule(3, min_faults=15)) >= 15


def test_every_fault_kind_appears_across_30_seeds() -> None:
    kinds = {f.kind for seed in range(30) for f in _schedule(seed)}

    assert kinds == set(FAULT_KINDS)


@pytest.mark.parametrize(
    "overrides",
    [
        {"min_faults": 500},
        {"duration_s": 100.0},  # shorter than the quiet tail: no room for any fault
    ],
)
def test_impossible_schedule_is_a_value_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"cannot fit .* make the run longer"):
        _schedule(1, **overrides)


# --- shrinking --------------------------------------------------------------------------------


class Counting:
    """A predicate "fails iff the schedule holds a fault of ``kind``", counting its calls."""

    def __init__(self, kind: str, *, min_duration_s: float = 0.0) -> None:
        self.kind = kind
        self.min_duration_s = min_duration_s
        self.calls = 0

    def __call__(self, faults: list[Fault]) -> bool:
        self.calls += 1
        return any(f.kind == self.kind and f.duration_s >= self.min_duration_s for f in faults)


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(FAULT_KINDS))
def test_shrink_keeps_exactly_the_one_fault_that_matters(seed: int, kind: str) -> None:
    faults = _schedule(seed)
    faults.insert(len(faults) // 2, Fault(200.0, kind, "a", 0.5, 0.3, 0.3))
    predicate = Counting(kind)

    shrunk = shrink(faults, predicate)

    assert len(shrunk) == 1
    assert shrunk[0].kind == kind
    assert predicate.calls <= 40


@pytest.mark.parametrize("max_tries", [1, 3, 7])
def test_shrink_respects_max_tries(max_tries: int) -> None:
    faults = _schedule(5)
    predicate = Counting(faults[-1].kind)

    shrunk = shrink(faults, predicate, max_tries=max_tries)

    assert predicate.calls <= max_tries
    assert predicate(shrunk)


def test_shrink_halves_durations_while_the_predicate_still_fails() -> None:
    faults = [Fault(10.0, "hang", "b", 10.0), Fault(50.0, "partition", "a", 20.0)]

    shrunk = shrink(faults, Counting("partition"))

    assert shrunk == [Fault(50.0, "partition", "a", 10.0)]


def test_shrink_keeps_a_duration_whose_half_no_longer_fails() -> None:
    faults = [Fault(50.0, "partition", "a", 20.0)]

    shrunk = shrink(faults, Counting("partition", min_duration_s=15.0))

    assert shrunk == faults


def test_shrink_leaves_sub_second_faults_alone() -> None:
    faults = [Fault(50.0, "hang", "a", 0.8)]
    predicate = Counting("hang")

    assert shrink(faults, predicate) == faults
    assert predicate.calls == 0
