"""One simulated run under hand-written fault schedules: invariants hold, and the checker
catches a build with fencing switched off (ARCHITECTURE.md sections 3 and 7).

Runs use the default configuration except their length: 200 s instead of 600 s, which
still leaves every fault ending before ``duration_s - quiet_tail_s`` as ``random_schedule``
guarantees, at a third of the CPU. Runs are cached per schedule so that tests sharing one
pay for it once. Slow: this module makes about 14 runs (~1 s each).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import pytest

from failover.chaos.sim_faults import Fault
from failover.chaos.sim_world import SimConfig
from failover.chaos.simulation import Simulation
from failover.core.controller import Decision, DecisionKind

SEED = 7
AT_S = 30.0
CONFIG = SimConfig(duration_s=200.0)
COMPONENTS = CONFIG.topology.components
EVEN = {"a": dict.fromkeys(COMPONENTS, 8), "b": dict.fromkeys(COMPONENTS, 8)}

PARTITION_A = (Fault(AT_S, "partition", "a", 10.0),)
HANG_B = (Fault(AT_S, "hang", "b", 5.0),)
# Resumes just after b's shards were granted to a, before the producers have re-sent
# their waiting messages there: the paused owner's late writes are then the only copies.
SHORT_HANG_B = (Fault(AT_S, "hang", "b", 1.7),)
SINGLE_FAULTS: dict[str, tuple[Fault, ...]] = {
    "site_crash": (Fault(AT_S, "site_crash", "a", 20.0),),
    "hang": HANG_B,
    "partition": PARTITION_A,
    "store_outage": (Fault(AT_S, "store_outage", "store", 20.0),),
    "component_crash": (Fault(AT_S, "component_crash", "a/eap", 5.0),),
    "link_cut": (Fault(AT_S, "link_cut", "a-b", 10.0),),
    "one_way_cut": (Fault(AT_S, "one_way_cut", "a>b", 10.0),),
    "flapping": (Fault(AT_S, "flapping", "b", 30.0, flap_down_s=1.0, flap_up_s=2.0),),
}
# Generous ceilings (s) to catch hangs, not to judge speed. The store outage's is tight on
# purpose: the control-plane failsafe keeps work flowing while only the store is gone.
CEILING_S = {kind: 10.0 for kind in SINGLE_FAULTS} | {"store_outage": 1.0}


@dataclass(frozen=True)
class Run:
    report: dict[str, Any]
    decisions: list[tuple[float, Decision]]


@functools.cache
def _run(faults: tuple[Fault, ...], *, fencing: bool = True) -> Run:
    sim = Simulation(replace(CONFIG, fencing_enabled=fencing), faults, SEED)
    report = sim.run().to_json()
    return Run(report, list(sim.decision_log))


def _invariants(report: dict[str, Any]) -> set[str]:
    """Every invariant the run broke (the violations list itself is capped)."""
    return set(report["violations_by_invariant"])


# --- no faults ---------------------------------------------------------------------------


def test_no_faults_no_violations_and_an_even_placement() -> None:
    report = _run(()).report

    assert report["violations"] == []
    assert report["shards_per_site"] == EVEN
    assert report["acked"] > 0
    assert report["acked_lost"] == 0
    assert report["stale_epoch_accepts"] == 0
    assert report["duplicates_applied"] == 0
    assert report["unavailability_s"] == {}
    assert report["max_unavailability_s"] < 1.0
    assert report["decisions"] == {"initial": len(COMPONENTS)}


# --- one fault of each kind (slow: one full run per kind) ------------------------------------


@pytest.mark.parametrize("kind", list(SINGLE_FAULTS))
def test_a_single_fault_breaks_nothing_and_work_flows_again_soon(kind: str) -> None:
    faults = SINGLE_FAULTS[kind]
    report = _run(faults).report

    assert report["violations"] == []
    assert report["violations_by_invariant"] == {}
    assert report["shards_per_site"] == EVEN
    assert report["acked_lost"] == 0
    assert report["stale_epoch_accepts"] == 0
    assert report["dual_owner_epochs"] == 0
    summary = report["unavailability_s"][kind]
    assert summary["n"] >= 1
    assert summary["max"] < CEILING_S[kind]
    injected = [e for e in report["faults"] if e["kind"] == kind and e["action"] == "inject"]
    healed = [e for e in report["faults"] if e["kind"] == kind and e["action"] == "heal"]
    assert injected[0]["at_s"] == faults[0].at_s
    assert len(injected) == len(healed) == summary["n"]


@pytest.mark.parametrize("kind", ["site_crash", "hang", "partition"])
def test_losing_a_site_fails_over_and_hands_back(kind: str) -> None:
    decisions = _run(SINGLE_FAULTS[kind]).report["decisions"]

    assert decisions["failover"] == len(COMPONENTS)
    assert decisions["transfer"] >= len(COMPONENTS)


def test_a_component_crash_moves_that_component_only() -> None:
    run = _run(SINGLE_FAULTS["component_crash"])

    moved = {d.component for _, d in run.decisions if d.kind is DecisionKind.FAILOVER}
    assert moved == {"eap"}


@pytest.mark.parametrize("kind", ["store_outage", "link_cut", "one_way_cut"])
def test_faults_that_leave_every_site_its_lease_move_nothing(kind: str) -> None:
    # A store-only outage freezes ownership (the control-plane failsafe); a cut between a
    # and b leaves both connected to the store through w.
    report = _run(SINGLE_FAULTS[kind]).report

    assert report["decisions"] == {"initial": len(COMPONENTS)}


def test_flapping_counts_every_flap() -> None:
    fault = SINGLE_FAULTS["flapping"][0]
    flaps = round(fault.duration_s / (fault.flap_down_s + fault.flap_up_s))

    report = _run(SINGLE_FAULTS["flapping"]).report

    assert report["unavailability_s"]["flapping"]["n"] == flaps
    assert report["unavailability_s"]["flapping_heal"]["n"] == flaps


def test_a_flapping_fault_heals_within_its_duration() -> None:
    fault = Fault(10.0, "flapping", "b", 10.0, flap_down_s=4.0, flap_up_s=0.5)

    report = Simulation(SimConfig(duration_s=60.0), [fault], SEED).run().to_json()

    heals = [e["at_s"] for e in report["faults"] if e["action"] == "heal"]
    assert max(heals) <= fault.at_s + fault.duration_s


# --- the checker catches a build without fencing (the most important tests here) -------------


def test_without_fencing_a_cut_off_owner_is_caught() -> None:
    report = _run(PARTITION_A, fencing=False).report

    assert report["violations"]
    assert report["stale_epoch_accepts"] > 0
    assert report["acked_lost"] > 0
    assert {"single_writer", "no_acked_loss", "minority_fences_first"} <= _invariants(report)


def test_without_fencing_a_paused_owner_that_resumes_after_the_takeover_is_caught() -> None:
    report = _run(SHORT_HANG_B, fencing=False).report

    assert report["violations"]
    assert report["stale_epoch_accepts"] > 0
    assert report["acked_lost"] > 0
    assert {"single_writer", "no_acked_loss"} <= _invariants(report)


def test_without_fencing_a_long_pause_is_caught_by_its_stale_accepts() -> None:
    # By the time b resumes, producers have re-sent its frozen messages to a, so its late
    # writes lose nothing; they are still work accepted under a superseded epoch.
    report = _run(HANG_B, fencing=False).report

    assert report["violations"]
    assert report["stale_epoch_accepts"] > 0
    assert "single_writer" in _invariants(report)


@pytest.mark.parametrize(
    "faults", [PARTITION_A, SHORT_HANG_B, HANG_B], ids=["partition", "short_hang", "hang"]
)
def test_with_fencing_the_same_schedules_break_nothing(faults: tuple[Fault, ...]) -> None:
    report = _run(faults, fencing=True).report

    assert report["violations"] == []
    assert report["stale_epoch_accepts"] == 0
    assert report["acked_lost"] == 0
    assert report["decisions"]["failover"] > 0  # the takeover that fencing must make safe


def test_the_violations_list_names_every_broken_invariant() -> None:
    report = _run(PARTITION_A, fencing=False).report

    listed = {v["invariant"] for v in report["violations"]}
    assert listed == set(report["violations_by_invariant"])


# --- determinism and hand-back -------------------------------------------------------------------


def test_same_config_faults_and_seed_give_the_same_report() -> None:
    config = SimConfig(duration_s=120.0)
    faults = [Fault(AT_S, "partition", "a", 10.0), Fault(70.0, "hang", "b", 3.0)]

    first = Simulation(config, faults, SEED).run().to_json()
    second = Simulation(config, faults, SEED).run().to_json()

    assert first == second
    assert first["acked"] > 0
    assert len(first["faults"]) == 4


def test_after_a_partition_longer_than_the_lease_the_shards_come_back_after_the_hold_off() -> None:
    fault = PARTITION_A[0]
    assert fault.duration_s > CONFIG.timing.lease_duration_s
    heal_s = fault.at_s + fault.duration_s
    run = _run(PARTITION_A)

    failovers = [(t, d) for t, d in run.decisions if d.kind is DecisionKind.FAILOVER]
    handbacks = [
        t for t, d in run.decisions if d.kind in (DecisionKind.DRAIN, DecisionKind.TRANSFER)
    ]
    assert failovers
    for t, d in failovers:
        assert fault.at_s < t < heal_s
        assert {d.ownership.shards[i].owner for i in d.shards} == {"b"}
    assert handbacks
    assert min(handbacks) >= heal_s + CONFIG.detector.handback_holdoff_s
    assert run.report["shards_per_site"] == EVEN
