"""The update executor over the smallest running system (agents and a controller on a fake
clock, ``small_system``), with each site's ``SiteVersions`` on an in-memory platform:
a release goes through, a bad version is rolled back, a new executor (a new leader)
resumes mid-update, and an abort leaves the system balanced."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from small_system import SmallSystem
from update_world import MemoryPlatform

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.core.update_manifest import parse_release
from failover.core.update_plan import plan_update
from failover.core.update_state import Outcome
from failover.core.versions import DEFAULT_VERSION
from failover.runtime.admin import Refused
from failover.runtime.site_versions import SiteVersions
from failover.runtime.update_admin import abort_update, begin, current_versions, read_update
from failover.runtime.update_checks import balanced, read_snapshot
from failover.runtime.update_runner import RunnerSettings, UpdateRunner


@dataclass
class World:
    system: SmallSystem
    platform: MemoryPlatform
    sites: dict[str, SiteVersions]
    runner: UpdateRunner

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.1)):
            self.system.run(1)
            for versions in self.sites.values():
                versions.tick()
            self.runner.tick()

    def run_until_finished(self, limit_s: float = 900.0) -> None:
        for _ in range(int(limit_s / 5)):
            self.run(5)
            state, _ = read_update(self.system.store)
            if state is not None and state.finished:
                return
        raise AssertionError("the update did not finish")


def _world() -> World:
    clock, store = FakeClock(), MemoryStore()
    system = SmallSystem(store, clock)
    platform = MemoryPlatform()
    sites = {
        s: SiteVersions(
            s,
            store=store,
            clock=clock,
            topology=system.topology,
            platform=platform if s in system.topology.workers else None,  # type: ignore[arg-type]
            ready=lambda c: True,
            health=(lambda c, s=s: platform.health(s, c)),  # type: ignore[misc]
            on_reboot=lambda: None,
        )
        for s in system.topology.site_names
    }
    runner = UpdateRunner(
        store, topology=system.topology, clock=clock, settings=RunnerSettings(interval_s=0.1)
    )
    world = World(system, platform, sites, runner)
    world.run(15)  # leases, initial placement, components stable
    return world


@pytest.fixture
def world() -> Iterator[World]:
    yield _world()


def _start(world: World, components: dict[str, str], site_steps: object = None) -> None:
    topology, store = world.system.topology, world.system.store
    doc: dict[str, object] = {"version": "r2", "components": components}
    if site_steps is not None:
        doc["site_steps"] = site_steps
    current = current_versions(store, topology)
    plan = plan_update(current, parse_release(doc, topology), topology, soak_s=5.0)
    begin(store, plan, current, topology=topology, now_wall_s=world.system.clock.wall())


def test_a_release_goes_through_both_sites_one_at_a_time(world: World) -> None:
    topology = world.system.topology
    cluster = [{"kind": "cluster", "name": "k3s", "version": "1.30"}]
    _start(world, dict.fromkeys(topology.components, "2.0.0"), {"a": cluster, "w": cluster})
    world.run_until_finished()
    state, _ = read_update(world.system.store)
    assert state is not None and state.outcome is Outcome.SUCCEEDED, state
    current = current_versions(world.system.store, topology)
    for site in topology.workers:
        assert all(current[site][c] == "2.0.0" for c in topology.components)
    assert current["a"]["cluster:k3s"] == "1.30" and current["w"]["cluster:k3s"] == "1.30"
    snap = read_snapshot(world.system.store, topology, now_wall_s=world.system.clock.wall())
    assert balanced(snap, topology)
    # a's components all changed before any of b's
    sites_in_order = [site for site, _, v in world.platform.changes if v == "2.0.0"]
    assert sites_in_order == sorted(sites_in_order)


def test_a_bad_version_fails_the_gate_and_site_a_is_rolled_back(world: World) -> None:
    topology = world.system.topology
    components = dict.fromkeys(topology.components, DEFAULT_VERSION)
    components["eap"] = "2.0.0+fail-after-ready"
    _start(world, components)
    world.run_until_finished()
    state, _ = read_update(world.system.store)
    assert state is not None and state.outcome is Outcome.ROLLED_BACK, state
    assert "error ratio" in state.reason
    current = current_versions(world.system.store, topology)
    assert current["a"]["eap"] == DEFAULT_VERSION and current["b"]["eap"] == DEFAULT_VERSION
    assert ("b", "eap", "2.0.0+fail-after-ready") not in world.platform.changes
    snap = read_snapshot(world.system.store, topology, now_wall_s=world.system.clock.wall())
    assert balanced(snap, topology)


def test_a_new_leader_resumes_the_update_where_it_stopped(world: World) -> None:
    topology = world.system.topology
    _start(world, dict.fromkeys(topology.components, "2.0.0"))
    for _ in range(200):  # until a's gate soaks
        world.run(0.5)
        state, _ = read_update(world.system.store)
        assert state is not None and not state.finished
        if state.steps[state.index].kind.value == "gate":
            break
    world.runner = UpdateRunner(  # the old leader is gone with what it knew
        world.system.store,
        topology=topology,
        clock=world.system.clock,
        settings=RunnerSettings(interval_s=0.1),
    )
    world.run_until_finished()
    state, _ = read_update(world.system.store)
    assert state is not None and state.outcome is Outcome.SUCCEEDED, state


def test_abort_mid_update_leaves_the_system_balanced(world: World) -> None:
    topology = world.system.topology
    _start(world, dict.fromkeys(topology.components, "2.0.0"))
    world.run(3)
    aborted, changed = abort_update(world.system.store)
    assert aborted is not None and changed
    world.run_until_finished()
    state, _ = read_update(world.system.store)
    assert state is not None and state.outcome is Outcome.ABORTED, state
    snap = read_snapshot(world.system.store, topology, now_wall_s=world.system.clock.wall())
    assert balanced(snap, topology)


def test_a_second_update_is_refused_while_one_runs(world: World) -> None:
    topology = world.system.topology
    _start(world, dict.fromkeys(topology.components, "2.0.0"))
    with pytest.raises(Refused, match="still running"):
        _start(world, dict.fromkeys(topology.components, "3.0.0"))


def test_an_update_is_refused_while_a_site_is_down() -> None:
    world = _world()
    world.system.agents.pop("b")  # b stops renewing: its lease runs out
    world.run(15)
    topology = world.system.topology
    with pytest.raises(Refused, match=r"site\(s\) b down"):
        _start(world, dict.fromkeys(topology.components, "2.0.0"))
