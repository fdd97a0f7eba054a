"""Contract tests every Platform passes (the ``Platform`` docstring in ``failover.ports``).

The ``harness`` fixture runs each contract test once per entry of ``PLATFORM_FACTORIES``:
only the local platform (real subprocesses) now; the Kubernetes platform joins later by
adding one factory there, whose harness kills a pod, tells whether it is gone and pings
its component. Tests of the local platform's own behaviour (its instances file, its
children dying with their parent) sit in the clearly marked section at the end.

Real processes: waits are bounded by generous ceilings that only catch hangs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from failover.adapters.local_platform import LocalPlatform, read_instances
from failover.core.topology import default_topology
from failover.ports import Instance, InstanceState, Platform, PlatformError
from failover.runtime.probes import ping
from failover.workload.endpoints import Endpoints, allocate
from failover.workload.launcher import wait_until

# Two components keep the test light; the platform treats every component alike.
TOPOLOGY = default_topology(shards_per_component=2, components=("backbone", "eap"))
CEILING_S = 60.0


@dataclass
class Harness:
    """A platform under test and what the test needs to act on its instances from outside."""

    platform: Platform
    kill: Callable[[Instance], None]  # kill -9 (a pod: delete with grace period 0)
    gone: Callable[[Instance], bool]  # its process (pod) no longer exists
    answers: Callable[[str, str], bool]  # the component answers a ping at its address


def process_gone(pid: int | None) -> bool:
    """No such process, or only its zombie (a dead child not yet reaped)."""
    if pid is None:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def make_run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    allocate(f"sqlite://{run_dir / 'bfm.db'}", TOPOLOGY).save(run_dir)
    return run_dir


def _local(tmp_path: Path) -> Harness:
    run_dir = make_run_dir(tmp_path)
    endpoints = Endpoints.load(run_dir)

    def kill(instance: Instance) -> None:
        assert instance.pid is not None
        os.kill(instance.pid, signal.SIGKILL)

    def answers(site: str, component: str) -> bool:
        return ping(endpoints.sites[site].modules[component], timeout_s=1.0)

    return Harness(LocalPlatform(run_dir, TOPOLOGY), kill, lambda i: process_gone(i.pid), answers)


# One entry per platform; the key is the pytest id. Kubernetes joins here later.
PLATFORM_FACTORIES: dict[str, Callable[[Path], Harness]] = {"local": _local}


@pytest.fixture(params=list(PLATFORM_FACTORIES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    made = PLATFORM_FACTORIES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.platform.close()


def running_and_answering(h: Harness, site: str, component: str) -> Instance:
    wait_until(
        lambda: h.answers(site, component), f"{site}/{component} answers", ceiling_s=CEILING_S
    )
    instance = h.platform.instance(site, component)
    assert instance.state is InstanceState.RUNNING
    return instance


# --- start / instances -------------------------------------------------------------------


def test_instances_before_any_start_are_stopped(harness: Harness) -> None:
    listed = harness.platform.instances("a")
    assert [i.component for i in listed] == sorted(TOPOLOGY.components)
    assert all(i.state is InstanceState.STOPPED for i in listed)
    assert all(i.restarts == 0 and not i.given_up for i in listed)


def test_start_runs_the_component_and_it_answers(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    assert started.state is InstanceState.RUNNING
    assert (started.site, started.component, started.restarts) == ("a", "eap", 0)
    assert started.instance_id
    instance = running_and_answering(harness, "a", "eap")
    assert instance.instance_id == started.instance_id
    # the other site's instance is its own
    assert harness.platform.instance("b", "eap").state is InstanceState.STOPPED


def test_start_of_a_running_instance_keeps_it(harness: Harness) -> None:
    first = harness.platform.start("a", "eap")
    again = harness.platform.start("a", "eap")
    assert again.instance_id == first.instance_id
    assert again.state is InstanceState.RUNNING


def test_a_killed_instance_is_reported_exited(harness: Harness) -> None:
    started = harness.platform.start("a", "backbone")
    running_and_answering(harness, "a", "backbone")
    harness.kill(started)
    wait_until(
        lambda: harness.platform.instance("a", "backbone").state is InstanceState.EXITED,
        "a/backbone reported exited",
        ceiling_s=CEILING_S,
    )
    exited = harness.platform.instance("a", "backbone")
    assert exited.exit_code not in (None, 0)
    assert exited.instance_id == started.instance_id
    assert not harness.answers("a", "backbone")


def test_restart_runs_it_again_with_a_new_instance(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    harness.kill(started)
    wait_until(
        lambda: harness.platform.instance("a", "eap").state is InstanceState.EXITED,
        "a/eap reported exited",
        ceiling_s=CEILING_S,
    )
    restarted = harness.platform.restart("a", "eap")
    assert restarted.state is InstanceState.RUNNING
    assert restarted.restarts == 1
    assert restarted.instance_id != started.instance_id
    running_and_answering(harness, "a", "eap")
    assert harness.gone(started)


def test_restart_of_a_running_instance_replaces_it(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    restarted = harness.platform.restart("a", "eap")
    assert restarted.instance_id != started.instance_id
    assert restarted.restarts == 1
    assert harness.gone(started)
    running_and_answering(harness, "a", "eap")


def test_stop_stops_it_and_the_process_is_gone(harness: Harness) -> None:
    started = harness.platform.start("b", "eap")
    running_and_answering(harness, "b", "eap")
    stopped = harness.platform.stop("b", "eap")
    assert stopped.state is InstanceState.STOPPED
    assert harness.gone(started)
    assert not harness.answers("b", "eap")
    assert harness.platform.stop("b", "eap").state is InstanceState.STOPPED  # idempotent


def test_stop_of_a_paused_instance_still_stops_it(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    running_and_answering(harness, "a", "eap")
    assert started.pid is not None
    os.kill(started.pid, signal.SIGSTOP)  # the local harness's pause; a pod is frozen alike
    assert harness.platform.stop("a", "eap").state is InstanceState.STOPPED
    assert harness.gone(started)


def test_stop_site_stops_every_instance(harness: Harness) -> None:
    started = [harness.platform.start("a", c) for c in TOPOLOGY.components]
    listed = harness.platform.stop_site("a")
    assert {i.state for i in listed} == {InstanceState.STOPPED}
    assert all(harness.gone(i) for i in started)


def test_give_up_keeps_it_down_until_started_again(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    harness.kill(started)
    wait_until(
        lambda: harness.platform.instance("a", "eap").state is InstanceState.EXITED,
        "a/eap reported exited",
        ceiling_s=CEILING_S,
    )
    given_up = harness.platform.give_up("a", "eap")
    assert given_up.state is InstanceState.GIVEN_UP
    assert given_up.given_up
    assert harness.platform.instance("a", "eap").state is InstanceState.GIVEN_UP
    again = harness.platform.start("a", "eap")
    assert again.state is InstanceState.RUNNING
    assert not again.given_up
    running_and_answering(harness, "a", "eap")


def test_close_stops_everything_and_refuses_new_starts(harness: Harness) -> None:
    started = [harness.platform.start(s, "eap") for s in TOPOLOGY.workers]
    harness.platform.close()
    assert all(harness.gone(i) for i in started)
    for site in TOPOLOGY.workers:
        assert harness.platform.instance(site, "eap").state is InstanceState.STOPPED
    with pytest.raises(PlatformError, match="closed"):
        harness.platform.start("a", "eap")
    with pytest.raises(PlatformError, match="closed"):
        harness.platform.restart("a", "eap")


# --- routing and facts -------------------------------------------------------------------


def test_route_and_routing_round_trip(harness: Harness) -> None:
    assert harness.platform.routing("a") is True  # never routed: serves
    harness.platform.route("a", serving=False)
    assert harness.platform.routing("a") is False
    assert harness.platform.routing("b") is True  # per site
    harness.platform.route("a", serving=True)
    assert harness.platform.routing("a") is True


def test_a_witness_has_no_entry_point(harness: Harness) -> None:
    with pytest.raises(ValueError, match="'w'"):
        harness.platform.route("w", serving=True)
    with pytest.raises(ValueError, match="'w'"):
        harness.platform.routing("w")


def test_sites_facts(harness: Harness) -> None:
    facts = {f.site: f for f in harness.platform.sites()}
    assert sorted(facts) == ["a", "b", "w"]
    assert [f.site for f in harness.platform.sites()] == ["a", "b", "w"]
    for site in ("a", "b"):
        assert facts[site].role == "worker"
        assert set(facts[site].components) == set(TOPOLOGY.components)
    assert facts["w"].role == "witness"
    assert facts["w"].components == ()
    for f in facts.values():
        assert f.nodes, f
        assert all(n.name for n in f.nodes)
        assert f.reachable == any(n.reachable for n in f.nodes)
        assert f.reachable  # every site of this run is up


# --- what the platform does not know -----------------------------------------------------


def _calls(platform: Platform, site: str, component: str) -> list[Callable[[], object]]:
    return [
        lambda: platform.start(site, component),
        lambda: platform.stop(site, component),
        lambda: platform.restart(site, component),
        lambda: platform.give_up(site, component),
        lambda: platform.instance(site, component),
    ]


def test_unknown_site_is_a_value_error_naming_it(harness: Harness) -> None:
    calls: list[Callable[[], object]] = [
        *_calls(harness.platform, "x", "eap"),
        lambda: harness.platform.instances("x"),
        lambda: harness.platform.stop_site("x"),
        lambda: harness.platform.route("x", serving=True),
        lambda: harness.platform.routing("x"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="'x'"):
            call()


def test_unknown_component_is_a_value_error_naming_it(harness: Harness) -> None:
    for call in _calls(harness.platform, "a", "nope"):
        with pytest.raises(ValueError, match="'nope'"):
            call()


def test_the_witness_runs_no_components(harness: Harness) -> None:
    calls: list[Callable[[], object]] = [
        *_calls(harness.platform, "w", "eap"),
        lambda: harness.platform.instances("w"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="'w'"):
            call()


# --- the local platform's own behaviour --------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalPlatform]:
    platform = LocalPlatform(make_run_dir(tmp_path), TOPOLOGY)
    try:
        yield platform
    finally:
        platform.close()


def test_local_instances_file_follows_every_change(local: LocalPlatform) -> None:
    started = local.start("a", "eap")
    data = read_instances(local.run_dir, "a")
    assert data["eap"]["pid"] == started.pid
    assert data["eap"]["state"] == "running"
    assert (data["eap"]["restarts"], data["eap"]["given_up"]) == (0, False)
    assert data["backbone"]["state"] == "stopped"
    assert started.pid is not None
    os.kill(started.pid, signal.SIGKILL)
    wait_until(
        lambda: local.instance("a", "eap").state is InstanceState.EXITED,
        "reported exited",
        ceiling_s=CEILING_S,
    )
    assert read_instances(local.run_dir, "a")["eap"]["state"] == "exited"
    local.give_up("a", "eap")
    data = read_instances(local.run_dir, "a")
    assert (data["eap"]["state"], data["eap"]["given_up"]) == ("given_up", True)
    restarted = local.restart("a", "eap")
    data = read_instances(local.run_dir, "a")
    assert (data["eap"]["pid"], data["eap"]["restarts"]) == (restarted.pid, 1)
    # written atomically: no temporary file is left beside it
    assert [p.name for p in local.run_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_local_routing_file_is_plain_json_for_the_producer(local: LocalPlatform) -> None:
    local.route("b", serving=False)
    data = json.loads((local.run_dir / "routing-b.json").read_text())
    assert data == {"site": "b", "serving": False}


def test_local_platform_runs_only_the_sites_it_is_given(tmp_path: Path) -> None:
    platform = LocalPlatform(make_run_dir(tmp_path), TOPOLOGY, sites=("a",))
    try:
        with pytest.raises(ValueError, match="'b' is not run by this platform"):
            platform.start("b", "eap")
        assert platform.routing("b") is True  # routing and facts cover every site
    finally:
        platform.close()
    with pytest.raises(ValueError, match="'w' is a witness"):
        LocalPlatform(tmp_path, TOPOLOGY, sites=("w",))


@pytest.fixture
def site_a(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A real `bfm site run --site=a --run-dir=...` with all of its components answering."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    topology = default_topology(shards_per_component=2)  # what `bfm site run` uses
    allocate(f"sqlite://{run_dir / 'bfm.db'}", topology).save(run_dir)
    with (run_dir / "site-a.log").open("ab") as log:
        site = subprocess.Popen(
            [sys.executable, "-m", "failover", "site", "run", "--site=a", f"--run-dir={run_dir}"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:

        def all_running() -> bool:
            data = read_instances(run_dir, "a")
            return len(data) == len(topology.components) and all(
                v["state"] == "running" for v in data.values()
            )

        wait_until(all_running, "the site started its components", ceiling_s=CEILING_S)
        modules = Endpoints.load(run_dir).sites["a"].modules
        wait_until(
            lambda: all(ping(address, timeout_s=1.0) for address in modules.values()),
            "every component answers",
            ceiling_s=CEILING_S,
        )
        yield site, run_dir
    finally:
        if site.poll() is None:
            site.kill()
            site.wait(timeout=CEILING_S)


def test_children_die_with_the_site_process(
    site_a: tuple[subprocess.Popen[bytes], Path],
) -> None:
    """kill -9 of a site process takes its components with it (PR_SET_PDEATHSIG)."""
    site, run_dir = site_a
    pids = [int(v["pid"]) for v in read_instances(run_dir, "a").values()]
    assert not any(process_gone(p) for p in pids)
    site.kill()
    site.wait(timeout=CEILING_S)
    wait_until(
        lambda: all(process_gone(p) for p in pids),
        "every component died with its site process",
        ceiling_s=CEILING_S,
    )


def test_sigterm_stops_the_components_cleanly_first(
    site_a: tuple[subprocess.Popen[bytes], Path],
) -> None:
    site, run_dir = site_a
    pids = [int(v["pid"]) for v in read_instances(run_dir, "a").values()]
    site.send_signal(signal.SIGTERM)
    assert site.wait(timeout=CEILING_S) == 0
    assert all(process_gone(p) for p in pids)
    data = read_instances(run_dir, "a")
    assert {(v["state"], v["exit_code"]) for v in data.values()} == {("stopped", 0)}
    assert "Traceback" not in (run_dir / "site-a.log").read_text()
