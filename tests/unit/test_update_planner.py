"""Rolling-update planner: manifest, plan shape, gate, state machine, and a simulated run.

The property tests drive the pure state machine the way the runtime will: each step is
applied to a model of the sites (versions, and whether each worker site holds its full
share, none, a canary share, or is undrained but not yet rebalanced), with a failure or
an abort injected at a random step and restarts (``from_doc(to_doc(state))`` through
JSON) at random points. The model asserts the safety rules at every step.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.topology import DEFAULT_COMPONENTS, Site, SiteRole, Topology, default_topology
from failover.core.updates import (
    BACKBONE,
    GateBounds,
    GateSamples,
    ManifestError,
    Outcome,
    Phase,
    Plan,
    PlanError,
    Purpose,
    Release,
    StaleStep,
    StateError,
    Step,
    StepKind,
    UpdateState,
    Verdict,
    abort,
    canary_shards,
    component_order,
    gate_verdict,
    next_step,
    parse_release,
    plan_update,
    start,
    step_done,
    step_failed,
    step_started,
    unsettled_sites,
)

TOPOLOGY = default_topology(shards_per_component=8)
WORKERS = TOPOLOGY.workers
MODULES = tuple(c for c in TOPOLOGY.components if c != BACKBONE)
VERSIONS = ("1.0", "1.1", "2.0")
FULL, NONE, CANARY, UNBALANCED = "full", "none", "canary", "unbalanced"


def release_doc(version: str = "r2", **components: str) -> dict[str, Any]:
    return {
        "version": version,
        "components": {c: components.get(c, "1.1") for c in DEFAULT_COMPONENTS},
    }


def all_at(version: str) -> dict[str, dict[str, str]]:
    return {s: dict.fromkeys(TOPOLOGY.components, version) for s in WORKERS}


def reload(state: UpdateState) -> UpdateState:
    """What a restarted controller reads from the store."""
    return UpdateState.from_doc(json.loads(json.dumps(state.to_doc())))


# -- manifest ------------------------------------------------------------------------------


def test_parse_release_reads_components_and_site_steps_in_order() -> None:
    doc = {
        **release_doc(),
        "site_steps": {
            "a": [
                {"kind": "os", "name": "debian", "version": "12.6"},
                {"kind": "cluster", "name": "k3s", "version": "1.30.2"},
            ],
            "w": [{"kind": "os", "name": "debian", "version": "12.6"}],
        },
    }
    release = parse_release(doc, TOPOLOGY)
    assert release.version == "r2"
    assert dict(release.components) == dict.fromkeys(DEFAULT_COMPONENTS, "1.1")
    assert [s.key for s in release.site_steps["a"]] == ["os:debian", "cluster:k3s"]
    assert list(release.site_steps) == ["a", "w"]


def _with(**changes: Any) -> dict[str, Any]:
    doc = release_doc()
    for key, value in changes.items():
        doc[key] = value
    return doc


def _components(**changes: Any) -> dict[str, Any]:
    comps: dict[str, Any] = dict.fromkeys(DEFAULT_COMPONENTS, "1.1")
    for key, value in changes.items():
        if value is None:
            del comps[key]
        else:
            comps[key] = value
    return _with(components=comps)


def _steps(site: str, *steps: Any) -> dict[str, Any]:
    return _with(site_steps={site: list(steps)})


OS = {"kind": "os", "name": "debian", "version": "12.6"}
MALFORMED: list[tuple[str, Any, str]] = [
    ("not a mapping", ["version"], "must be a mapping"),
    ("typo field", {**release_doc(), "componets": {}}, "unknown field 'componets'"),
    ("no version", {"components": release_doc()["components"]}, "'version' is missing"),
    ("empty version", _with(version=""), "'version' is empty"),
    ("blank version", _with(version="  "), "'version' is empty"),
    ("spaced version", _with(version=" r2"), "spaces around"),
    ("number version", _with(version=2.1), "quote it in YAML"),
    ("bool version", _with(version=True), "'version' must be a version string"),
    ("list version", _with(version=["r2"]), "'version' must be a version string, got a list"),
    ("no components", {"version": "r2"}, "'components' is missing"),
    ("components list", _with(components=["eep"]), "'components' must be a mapping"),
    ("unknown component", _components(foo="1.0"), "'components.foo': unknown component"),
    ("missing component", _components(gsm=None), "lacks gsm"),
    ("empty component version", _components(eep=""), "'components.eep' is empty"),
    ("float component version", _components(eep=1.10), "'components.eep' must be a version"),
    ("null component version", _components(eep=None), "lacks eep"),
    ("site_steps list", _with(site_steps=[OS]), "'site_steps' must be a mapping"),
    ("unknown site", _steps("c", OS), "'site_steps.c': unknown site"),
    ("steps not a list", _with(site_steps={"a": OS}), "'site_steps.a' must be a list"),
    ("step not a mapping", _steps("a", "os"), "'site_steps.a[0]' must be a mapping"),
    ("bad kind", _steps("a", {**OS, "kind": "kernel"}), "'site_steps.a[0].kind' must be one of"),
    ("no kind", _steps("a", {"name": "debian", "version": "1"}), "'site_steps.a[0].kind'"),
    ("empty name", _steps("a", {**OS, "name": ""}), "'site_steps.a[0].name'"),
    ("colon name", _steps("a", {**OS, "name": "os:debian"}), "without ':'"),
    ("no step version", _steps("a", {"kind": "os", "name": "x"}), "a[0].version' is missing"),
    ("empty step version", _steps("a", {**OS, "version": ""}), "a[0].version' is empty"),
    ("unknown step field", _steps("a", {**OS, "when": "now"}), "'site_steps.a[0].when': unknown"),
    ("duplicate step", _steps("w", OS, {**OS, "version": "13"}), "listed twice"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_manifest_names_the_field(doc: Any, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_release(doc, TOPOLOGY)
    assert expected in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_manifest_error_lists_every_problem() -> None:
    doc = {"version": "", "components": {"foo": "1"}, "extra": 1}
    with pytest.raises(ManifestError) as caught:
        parse_release(doc, TOPOLOGY)
    assert len(caught.value.problems) == 4  # extra, version, foo, the six missing ones


# -- plan shape ----------------------------------------------------------------------------


def test_full_release_plans_witness_first_then_each_site_modules_before_backbone() -> None:
    current = all_at("1.0")
    current["a"]["os:debian"] = "12.5"
    doc = {
        **release_doc(),
        "site_steps": {
            "a": [OS, {"kind": "cluster", "name": "k3s", "version": "1.30"}],
            "w": [{"kind": "cluster", "name": "k3s", "version": "1.30"}],
        },
    }
    plan = plan_update(current, parse_release(doc, TOPOLOGY), TOPOLOGY, first_site="b")
    kinds = [(s.site, s.kind, s.target) for s in plan.steps]
    site_a = [
        ("a", StepKind.PRECHECK, ""),
        ("a", StepKind.DRAIN, ""),
        ("a", StepKind.UPDATE_OS, "os:debian"),
        ("a", StepKind.UPDATE_CLUSTER, "cluster:k3s"),
        *[("a", StepKind.UPDATE_COMPONENT, c) for c in (*MODULES, BACKBONE)],
        ("a", StepKind.CANARY, ""),
        ("a", StepKind.GATE, ""),
        ("a", StepKind.UNDRAIN, ""),
        ("a", StepKind.REBALANCE, ""),
    ]
    site_b = [
        (("b" if s == "a" else s), k, t)
        for s, k, t in site_a
        if k not in (StepKind.UPDATE_OS, StepKind.UPDATE_CLUSTER)
    ]
    assert kinds == [
        ("w", StepKind.PRECHECK, ""),
        ("w", StepKind.UPDATE_CLUSTER, "cluster:k3s"),
        *site_b,
        *site_a,
    ]
    assert plan.sites == ("w", "b", "a")
    assert all(s.explanation for s in plan.steps)
    os_step = plan.steps[len(site_b) + 4]
    assert (os_step.from_version, os_step.to_version) == ("12.5", "12.6")
    assert all(s.purpose is Purpose.UPDATE for s in plan.steps)


def test_only_changed_components_are_updated_and_an_unchanged_site_is_not_drained() -> None:
    current = all_at("1.1")
    current["b"]["eap"] = "1.0"
    plan = plan_update(current, parse_release(release_doc(), TOPOLOGY), TOPOLOGY)
    assert plan.sites == ("b",)
    updates = [s for s in plan.steps if s.kind is StepKind.UPDATE_COMPONENT]
    assert [(s.site, s.target, s.from_version, s.to_version) for s in updates] == [
        ("b", "eap", "1.0", "1.1")
    ]


def test_a_no_op_release_makes_an_empty_plan_that_is_finished_at_once() -> None:
    current = all_at("1.1")
    current["w"] = {"os:debian": "12.6"}
    doc = {**release_doc(), "site_steps": {"w": [OS]}}
    plan = plan_update(current, parse_release(doc, TOPOLOGY), TOPOLOGY)
    assert plan.steps == ()
    state = start(plan, current)
    assert state.outcome is Outcome.SUCCEEDED
    assert next_step(state) is None


def test_component_order_puts_the_backbone_last() -> None:
    assert component_order(TOPOLOGY) == (*MODULES, BACKBONE)
    assert component_order(default_topology(components=("eep", "eap"))) == ("eep", "eap")


@pytest.mark.parametrize(
    ("share", "expected"), [(0.01, 1), (0.25, 1), (0.5, 2), (0.26, 2), (1.0, 4)]
)
def test_canary_is_a_share_of_the_site_even_share(share: float, expected: int) -> None:
    # 8 shards over two equal sites: an even share of 4
    assert canary_shards(TOPOLOGY, "a", share) == expected


@pytest.mark.parametrize(
    ("kwargs", "current", "expected"),
    [
        ({"canary_share": 0.0}, all_at("1.0"), "canary_share"),
        ({"canary_share": 1.5}, all_at("1.0"), "canary_share"),
        ({"soak_s": -1.0}, all_at("1.0"), "soak_s"),
        ({"soak_s": float("nan")}, all_at("1.0"), "soak_s"),
        ({"first_site": "w"}, all_at("1.0"), "not a worker site"),
        ({}, {"a": all_at("1.0")["a"]}, "site b is missing"),
        ({}, {**all_at("1.0"), "a": {"eep": "1.0"}}, "site a lacks backbone"),
        ({}, {**all_at("1.0"), "x": {}}, "unknown site 'x'"),
        ({}, {**all_at("1.0"), "w": {"os:debian": ""}}, "w/os:debian"),
    ],
)
def test_plan_refuses_bad_inputs(kwargs: dict[str, Any], current: Any, expected: str) -> None:
    release = parse_release(release_doc(), TOPOLOGY)
    with pytest.raises(PlanError, match=expected):
        plan_update(current, release, TOPOLOGY, **kwargs)


def test_plan_needs_two_worker_sites() -> None:
    one = Topology(sites=(Site("a", SiteRole.WORKER), Site("w", SiteRole.WITNESS, 0.0)))
    release = parse_release(release_doc(), one)
    with pytest.raises(PlanError, match="two worker sites"):
        plan_update({"a": all_at("1.0")["a"]}, release, one)


def test_plan_refuses_a_release_for_another_topology() -> None:
    release = Release("r2", {"eep": "1"}, {})
    with pytest.raises(PlanError, match="no version for component"):
        plan_update(all_at("1.0"), release, TOPOLOGY)


def test_plan_document_round_trips_and_detects_tampering() -> None:
    plan = plan_update(all_at("1.0"), parse_release(release_doc(), TOPOLOGY), TOPOLOGY)
    doc = json.loads(json.dumps(plan.to_doc()))
    assert Plan.from_doc(doc) == plan
    doc["steps"][3]["to_version"] = "6.6.6"
    with pytest.raises(ValueError, match="digest"):
        Plan.from_doc(doc)
    assert all(kind.done_when for kind in StepKind)


# -- gate ------------------------------------------------------------------------------------

BOUNDS = GateBounds(
    max_error_ratio=0.01, max_p99_s=0.5, soak_s=30.0, min_messages=50, max_wait_s=120.0
)


@pytest.mark.parametrize(
    ("samples", "elapsed_s", "verdict", "words"),
    [
        (GateSamples(500, 0.0, 0.1), 31.0, Verdict.PASS, "healthy"),
        (GateSamples(500, 0.0, 0.1), 10.0, Verdict.WAIT, "soaking"),
        (GateSamples(500, 0.0, 0.1, not_ready=("eep",)), 31.0, Verdict.FAIL, "not ready: eep"),
        (GateSamples(500, 0.05, 0.1), 2.0, Verdict.FAIL, "error ratio"),
        (GateSamples(500, 0.0, 0.9), 2.0, Verdict.FAIL, "p99 latency"),
        (GateSamples(500, 0.01, 0.5), 30.0, Verdict.PASS, "healthy"),  # bounds are inclusive
        (GateSamples(3, 1.0, 2.0), 10.0, Verdict.WAIT, "soaking"),  # too few to judge
        (GateSamples(3, 0.0, None), 40.0, Verdict.WAIT, "waiting for traffic"),
        (GateSamples(3, 0.0, None), 120.0, Verdict.FAIL, "only 3 message"),
        (GateSamples(60, 0.0, None), 31.0, Verdict.PASS, "no latency yet"),
    ],
)
def test_gate_verdict(samples: GateSamples, elapsed_s: float, verdict: Verdict, words: str) -> None:
    got = gate_verdict(samples, BOUNDS, soak_started_s=100.0, now_s=100.0 + elapsed_s)
    assert got.verdict is verdict
    assert words in got.reason


def test_gate_refuses_impossible_readings_and_bounds() -> None:
    with pytest.raises(ValueError, match="before soak_started_s"):
        gate_verdict(GateSamples(1, 0.0, 0.1), BOUNDS, soak_started_s=10.0, now_s=9.0)
    with pytest.raises(ValueError, match="error_ratio"):
        GateSamples(1, float("nan"), 0.1)
    with pytest.raises(ValueError, match="p99_s"):
        GateSamples(1, 0.0, -1.0)
    with pytest.raises(ValueError, match="max_wait_s"):
        GateBounds(soak_s=60.0, max_wait_s=30.0)
    assert GateBounds(soak_s=60.0).wait_limit_s == 240.0
    assert GateBounds(soak_s=10.0).wait_limit_s == 120.0


# -- state machine: unit cases ---------------------------------------------------------------


def _run_to(state: UpdateState, kind: StepKind, site: str) -> UpdateState:
    while (step := next_step(state)) is not None and not (step.kind is kind and step.site == site):
        state = step_done(step_started(state, state.index), state.index)
    return state


def _finish(state: UpdateState) -> UpdateState:
    while next_step(state) is not None:
        state = step_done(step_started(state, state.index), state.index)
    return state


def _simple_state() -> tuple[dict[str, dict[str, str]], UpdateState]:
    current = all_at("1.0")
    plan = plan_update(current, parse_release(release_doc(), TOPOLOGY), TOPOLOGY)
    return current, start(plan, current)


def test_failed_gate_rolls_back_that_site_only_backbone_restored_first() -> None:
    _, state = _simple_state()
    state = _run_to(state, StepKind.GATE, "b")
    state = step_failed(state, state.index, "error ratio 4.00% above the bound 1.00%")
    assert state.mode is Purpose.ROLLBACK and state.outcome is Outcome.RUNNING
    rest = state.steps[state.index :]
    assert [(s.kind, s.target) for s in rest] == [
        (StepKind.DRAIN, ""),
        *[(StepKind.UPDATE_COMPONENT, c) for c in (BACKBONE, *reversed(MODULES))],
        (StepKind.UNDRAIN, ""),
        (StepKind.REBALANCE, ""),
    ]
    assert all(s.site == "b" and s.purpose is Purpose.ROLLBACK for s in rest)
    assert all((s.from_version, s.to_version) == ("1.1", "1.0") for s in rest if s.target)
    state = _finish(state)
    assert state.outcome is Outcome.ROLLED_BACK
    assert "release r2 stays at a" in state.reason and "error ratio" in state.reason


def test_failure_before_the_canary_restores_without_draining_again() -> None:
    _, state = _simple_state()
    state = _run_to(state, StepKind.UPDATE_COMPONENT, "a")
    state = step_done(step_started(state, state.index), state.index)  # eep updated
    state = step_failed(step_started(state, state.index), state.index, "eap did not start")
    rest = [(s.kind, s.target) for s in state.steps[state.index :]]
    assert rest == [
        (StepKind.UPDATE_COMPONENT, "eap"),
        (StepKind.UPDATE_COMPONENT, "eep"),
        (StepKind.UNDRAIN, ""),
        (StepKind.REBALANCE, ""),
    ]


def test_failed_precheck_or_witness_step_stops_with_nothing_to_roll_back() -> None:
    current = all_at("1.0")
    doc = {**release_doc(), "site_steps": {"w": [OS]}}
    plan = plan_update(current, parse_release(doc, TOPOLOGY), TOPOLOGY)
    state = start(plan, current)
    stopped = step_failed(state, 0, "site b is down")
    assert stopped.outcome is Outcome.FAILED and "nothing changed at w" in stopped.reason
    assert all(p is Phase.SKIPPED for p in stopped.phases[1:])
    state = step_done(state, 0)
    stopped = step_failed(step_started(state, 1), 1, "apt failed")
    assert stopped.outcome is Outcome.FAILED and "cannot be rolled back" in stopped.reason


def test_a_failure_during_rollback_stops_and_tells_the_operator_what_to_do() -> None:
    _, state = _simple_state()
    state = _run_to(state, StepKind.GATE, "a")
    state = step_failed(state, state.index, "p99 latency 0.9 s above the bound")
    state = step_done(state, state.index)  # drain again
    state = step_failed(state, state.index, "backbone 1.0 did not start")
    assert state.outcome is Outcome.FAILED
    assert "bfm undrain a" in state.reason and next_step(state) is None


def test_abort_undrains_and_rebalances_the_drained_site_only() -> None:
    _, state = _simple_state()
    state = _run_to(state, StepKind.UPDATE_COMPONENT, "a")
    assert unsettled_sites(state) == {"a": False}
    aborted = abort(step_started(state, state.index))
    assert aborted.phases[state.index] is Phase.SKIPPED
    assert [s.kind for s in aborted.steps[aborted.index :]] == [
        StepKind.UNDRAIN,
        StepKind.REBALANCE,
    ]
    assert abort(aborted) == aborted
    assert _finish(aborted).outcome is Outcome.ABORTED
    # after the undrain only the rebalance is left; before any drain nothing is
    state = _run_to(state, StepKind.REBALANCE, "a")
    assert [s.kind for s in abort(state).steps[len(state.steps) :]] == [StepKind.REBALANCE]
    _, fresh = _simple_state()
    assert abort(fresh).outcome is Outcome.ABORTED


def test_abort_during_a_rollback_still_undrains_the_site() -> None:
    _, state = _simple_state()
    state = _run_to(state, StepKind.GATE, "a")
    state = step_failed(state, state.index, "not ready: eep")
    state = step_done(step_started(state, state.index), state.index)  # drained again
    aborted = abort(state)
    rest = aborted.steps[aborted.index :]
    assert [(s.kind, s.site, s.purpose) for s in rest] == [
        (StepKind.UNDRAIN, "a", Purpose.ABORT),
        (StepKind.REBALANCE, "a", Purpose.ABORT),
    ]
    assert _finish(aborted).outcome is Outcome.ABORTED


def test_transitions_refuse_a_step_that_is_not_current_and_repeat_safely() -> None:
    _, state = _simple_state()
    with pytest.raises(StaleStep, match="not the current step"):
        step_done(state, 3)
    done = step_done(state, 0)
    assert step_done(done, 0) == done  # a repeated report changes nothing
    assert step_started(step_started(done, 1), 1) == step_started(done, 1)
    aborted = abort(step_started(done, 1))
    with pytest.raises(StaleStep):
        step_done(aborted, 1)  # the abort moved on from the step that was running
    finished = _finish(aborted)
    with pytest.raises(StaleStep, match="aborted"):
        step_started(finished, finished.index)


def test_start_refuses_versions_that_changed_since_planning() -> None:
    current, state = _simple_state()
    changed = copy.deepcopy(current)
    changed["a"]["eep"] = "1.1"
    with pytest.raises(StateError, match="make the plan again"):
        start(state.plan, changed)


def _doc_with(path: str, value: Any) -> dict[str, Any]:
    _, state = _simple_state()
    doc: dict[str, Any] = json.loads(json.dumps(step_started(step_done(state, 0), 1).to_doc()))
    target: Any = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return doc


GARBAGE: list[tuple[str, Any, str]] = [
    ("not an object", [1, 2], "must be an object"),
    ("no schema", _doc_with("schema", KeyError), "'schema'"),
    ("other schema", _doc_with("schema", "bfm.update-state/9"), "another version"),
    ("steps not a list", _doc_with("steps", {}), "'steps' must be a list"),
    ("bad phase", _doc_with("steps.0.phase", "maybe"), "steps[0].phase"),
    ("bad kind", _doc_with("steps.2.kind", "reboot"), "steps[2]"),
    ("bad site", _doc_with("steps.2.site", 7), "steps[2].site"),
    ("bad shards", _doc_with("steps.2.shards", -1), "steps[2].shards"),
    ("bad soak", _doc_with("steps.2.soak_s", "30"), "steps[2].soak_s"),
    ("extra step field", _doc_with("steps.2.color", "red"), "unknown fields"),
    ("tampered plan", _doc_with("steps.5.to_version", "9.9"), "digest"),
    ("plan_steps too big", _doc_with("plan_steps", 999), "'plan_steps'"),
    ("bad index", _doc_with("index", 99), "'index'"),
    ("bool index", _doc_with("index", True), "'index'"),
    ("index behind phases", _doc_with("index", 0), "current step"),
    ("bad mode", _doc_with("mode", "panic"), "'mode'"),
    ("bad outcome", _doc_with("outcome", "meh"), "'outcome'"),
    ("finished but index inside", _doc_with("outcome", "succeeded"), "must have index"),
    ("bad before", _doc_with("before", []), "'before'"),
    ("bad before version", _doc_with("before.a.eep", 1), "'before.a.eep'"),
    ("bad reason", _doc_with("reason", None), "'reason'"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in GARBAGE], ids=[n for n, _, _ in GARBAGE]
)
def test_state_from_garbage_raises_a_clear_error(doc: Any, expected: str) -> None:
    with pytest.raises(StateError) as caught:
        UpdateState.from_doc(doc)
    assert expected in str(caught.value)


# -- the simulated run ----------------------------------------------------------------------


@dataclass
class World:
    """The model the runtime changes: versions per site, and what each worker site holds."""

    versions: dict[str, dict[str, str]]
    holding: dict[str, str] = field(default_factory=lambda: dict.fromkeys(WORKERS, FULL))

    def apply(
        self, step: Step, before: dict[str, dict[str, str]], updated: dict[str, set[str]]
    ) -> None:
        """Do the step, asserting the safety rules it must keep."""
        site, kind = step.site, step.kind
        if kind is StepKind.PRECHECK:
            assert all(h == FULL for h in self.holding.values()), self.holding
        elif kind is StepKind.DRAIN:
            self._only(site)
            self.holding[site] = NONE
        elif kind in (StepKind.UPDATE_OS, StepKind.UPDATE_CLUSTER):
            if site in WORKERS:
                assert self.holding[site] == NONE, f"{step.summary} while {site} holds shards"
            else:  # the witness rule
                assert all(h == FULL for h in self.holding.values()), (step.summary, self.holding)
            self.versions.setdefault(site, {})[step.target] = str(step.to_version)
        elif kind is StepKind.UPDATE_COMPONENT:
            assert self.holding[site] == NONE, f"{step.summary} while {site} holds shards"
            self.versions[site][step.target] = str(step.to_version)
        elif kind is StepKind.CANARY:
            assert self.holding[site] in (NONE, CANARY)  # CANARY: done before a restart
            self.holding[site] = CANARY
        elif kind is StepKind.GATE:
            assert self.holding[site] == CANARY
        elif kind is StepKind.UNDRAIN:
            self._only(site)
            self.holding[site] = UNBALANCED if self.holding[site] != FULL else FULL
        elif kind is StepKind.REBALANCE:
            assert self.holding[site] in (UNBALANCED, FULL), self.holding
            self.holding[site] = FULL
        self.check(before, updated)

    def fail(self, step: Step, partial: bool) -> None:
        """A failed step leaves its effect half done (``partial``) or not done at all."""
        if not partial:
            return
        if step.kind in (StepKind.UPDATE_COMPONENT, StepKind.UPDATE_OS, StepKind.UPDATE_CLUSTER):
            self.versions.setdefault(step.site, {})[step.target] = f"broken-{step.to_version}"
        elif step.kind is StepKind.DRAIN:
            self.holding[step.site] = UNBALANCED  # some shards moved, some not
        elif step.kind is StepKind.CANARY:
            self.holding[step.site] = CANARY
        elif step.kind is StepKind.UNDRAIN:
            self.holding[step.site] = UNBALANCED

    def _only(self, site: str) -> None:
        others = [s for s in WORKERS if s != site and self.holding[s] != FULL]
        assert not others, f"{site} changes while {others} is not back in full: {self.holding}"

    def check(self, before: dict[str, dict[str, str]], updated: dict[str, set[str]]) -> None:
        assert sum(h in (NONE, CANARY) for h in self.holding.values()) <= 1, self.holding
        for site in WORKERS:
            # readers before the writer: a changed router only over modules already changed
            if self.versions[site][BACKBONE] != before[site][BACKBONE]:
                stale = [m for m in updated[site] if self.versions[site][m] == before[site][m]]
                assert not stale, f"{site}: new backbone over old {stale}"


@dataclass(frozen=True)
class Scenario:
    current: dict[str, dict[str, str]]
    doc: dict[str, Any]
    first_site: str
    canary_share: float
    event: str  # "none", "fail" or "abort"
    event_at: float  # where in the plan: 0 its first step, 1 past its last
    partial: bool  # the failed or interrupted step got halfway (or started, for an abort)
    restarts: frozenset[tuple[int, str]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    version = st.sampled_from(VERSIONS)
    current = {s: {c: draw(version) for c in TOPOLOGY.components} for s in WORKERS}
    steps: dict[str, list[dict[str, str]]] = {}
    for site in TOPOLOGY.site_names:
        for kind, name in (("os", "debian"), ("cluster", "k3s")):
            if draw(st.booleans()):
                current.setdefault(site, {})[f"{kind}:{name}"] = draw(version)
            if draw(st.booleans()):
                steps.setdefault(site, []).append(
                    {"kind": kind, "name": name, "version": draw(version)}
                )
    doc = {
        "version": "next",
        "components": {c: draw(version) for c in TOPOLOGY.components},
        "site_steps": steps,
    }
    return Scenario(
        current=current,
        doc=doc,
        first_site=draw(st.sampled_from(WORKERS)),
        canary_share=draw(st.floats(min_value=0.01, max_value=1.0)),
        event=draw(st.sampled_from(("none", "fail", "fail", "abort"))),
        event_at=draw(st.floats(min_value=0.0, max_value=0.999)),
        partial=draw(st.booleans()),
        restarts=frozenset(
            draw(
                st.sets(
                    st.tuples(
                        st.integers(min_value=0, max_value=60),
                        st.sampled_from(("before", "running", "running+effect", "after")),
                    ),
                    max_size=6,
                )
            )
        ),
    )


def simulate(scn: Scenario, *, restarts: bool) -> tuple[World, UpdateState, Plan]:
    """Drive the state machine as the runtime would, over the model world."""
    release = parse_release(scn.doc, TOPOLOGY)
    plan = plan_update(
        scn.current, release, TOPOLOGY, canary_share=scn.canary_share, first_site=scn.first_site
    )
    before = copy.deepcopy(scn.current)
    updated = {
        s: {t.target for t in plan.steps if t.site == s and t.kind is StepKind.UPDATE_COMPONENT}
        for s in WORKERS
    }
    world = World(copy.deepcopy(scn.current))
    state = start(plan, scn.current)
    pending_restarts = set(scn.restarts) if restarts else set()
    event_pending = scn.event != "none" and bool(plan.steps)
    event_index = int(scn.event_at * len(plan.steps))

    def maybe_restart(at: int, where: str) -> None:
        nonlocal state
        if (at, where) in pending_restarts:
            pending_restarts.discard((at, where))
            loaded = reload(state)
            assert loaded == state  # the store keeps everything, a running phase included
            state = loaded

    for _ in range(200):
        step = next_step(state)
        if step is None:
            break
        i = state.index
        maybe_restart(i, "before")
        if event_pending and i == event_index and scn.event == "abort":
            event_pending = False
            if scn.partial:  # aborted while the step was running, its effect done
                state = step_started(state, i)
                world.apply(step, before, updated)
            state = abort(state)
            continue
        state = step_started(state, i)
        if (i, "running+effect") in pending_restarts and not (event_pending and i == event_index):
            world.apply(step, before, updated)  # done, but the controller died before saying so
        maybe_restart(i, "running+effect")
        maybe_restart(i, "running")
        if event_pending and i == event_index:
            event_pending = False
            world.fail(step, scn.partial)
            state = step_failed(state, i, "injected failure")
            continue
        world.apply(step, before, updated)
        state = step_done(state, i)
        maybe_restart(i, "after")
    else:
        pytest.fail("the update did not finish within 200 steps")
    return world, state, plan


@settings(max_examples=120)
@given(scenarios())
def test_simulated_update_keeps_every_rule_and_ends_balanced(scn: Scenario) -> None:
    world, state, plan = simulate(scn, restarts=False)
    release = parse_release(scn.doc, TOPOLOGY)
    assert state.finished and next_step(state) is None
    assert all(h == FULL for h in world.holding.values()), (state.reason, world.holding)
    assert not unsettled_sites(state)
    failed = [s for s, p in zip(state.steps, state.phases, strict=True) if p is Phase.FAILED]
    event_hit = scn.event != "none" and bool(plan.steps)
    if not event_hit:
        assert state.outcome is Outcome.SUCCEEDED, state.reason
    elif scn.event == "abort":
        assert state.outcome is Outcome.ABORTED
    elif failed[0].kind is StepKind.PRECHECK or failed[0].site not in WORKERS:
        assert state.outcome is Outcome.FAILED
    else:
        assert state.outcome is Outcome.ROLLED_BACK
    for site in WORKERS:
        for c in TOPOLOGY.components:
            now, was, target = world.versions[site][c], scn.current[site][c], release.components[c]
            assert now in (was, target), f"{site}/{c}: {now} is neither {was} nor {target}"
            if state.outcome is Outcome.SUCCEEDED:
                assert now == target
            if state.outcome is Outcome.ROLLED_BACK and site == failed[0].site:
                assert now == was, f"{site}/{c} not rolled back"
    if state.outcome is Outcome.SUCCEEDED:
        for site, items in release.site_steps.items():
            assert all(world.versions[site][i.key] == i.version for i in items)
    # a restart at any point continues to the same end
    again, resumed, _ = simulate(scn, restarts=True)
    assert (again.versions, again.holding) == (world.versions, world.holding)
    assert (resumed.outcome, resumed.reason, resumed.steps) == (
        state.outcome,
        state.reason,
        state.steps,
    )


@settings(max_examples=60)
@given(scenarios())
def test_release_equal_to_the_current_versions_plans_nothing(scn: Scenario) -> None:
    current = copy.deepcopy(scn.current)
    release = parse_release(scn.doc, TOPOLOGY)
    for site in WORKERS:
        current[site].update(release.components)
    for site, items in release.site_steps.items():
        current.setdefault(site, {}).update({i.key: i.version for i in items})
    assert plan_update(current, release, TOPOLOGY).steps == ()


@settings(max_examples=60)
@given(scenarios())
def test_every_intermediate_state_round_trips_through_json(scn: Scenario) -> None:
    plan = plan_update(scn.current, parse_release(scn.doc, TOPOLOGY), TOPOLOGY)
    state = start(plan, scn.current)
    event_index = int(scn.event_at * len(plan.steps))
    seen = 0
    while next_step(state) is not None and seen < 100:
        assert reload(state) == state
        if seen == event_index and scn.event == "fail":
            state = step_failed(state, state.index, "boom")
        elif seen == event_index and scn.event == "abort":
            state = abort(state)
        else:
            state = step_done(step_started(state, state.index), state.index)
        seen += 1
    assert reload(state) == state
