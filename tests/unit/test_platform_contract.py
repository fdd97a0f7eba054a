"""Contract tests every Platform passes (the ``Platform`` docstring in ``failover.ports``).

The ``harness`` fixture runs each contract test once per entry of ``PLATFORM_FACTORIES``:
the local platform (real subprocesses) and the Kubernetes platform, whose pods are run
by the Kubernetes API double (``tests/support/kube_double.py``, a double: no API server
can be installed here) and its kubelet double (``tests/support/kubelet_double.py``), which
runs each scheduled pod's container as a real local process of the same component. Each
harness kills an instance from outside (kill -9 of the process; for a pod, of its
container's process, as a crash), pauses it, tells whether it is gone, pings its
component and reads the version it was started with. Tests of the local platform's own
behaviour (its instances file, its children dying with their parent, its changes of one
instance taking turns) sit in the clearly marked section at the end.

Real processes: waits are bounded by generous ceilings that only catch hangs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support.kube_double import KubeApiDouble, add_site_nodes
from support.kubelet_double import KubeletDouble

from failover.adapters import local_platform
from failover.adapters.kubernetes_platform import KubernetesPlatform
from failover.adapters.kubernetes_pods import PodTemplate
from failover.adapters.local_platform import LocalPlatform, read_instances
from failover.core.topology import default_topology
from failover.core.versions import DEFAULT_VERSION
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
    kill: Callable[[Instance], None]  # kill -9 (a pod: of its container's process)
    pause: Callable[[Instance], None]  # SIGSTOP (a pod: its container's process)
    gone: Callable[[Instance], bool]  # its process (pod, and the pod's process) is gone
    answers: Callable[[str, str], bool]  # the component answers a ping at its address
    started_at: Callable[[Instance], str | None]  # the version its process (pod) was given
    stop: Callable[[], None] = lambda: None  # after the platform was closed


def process_gone(pid: int | None) -> bool:
    """No such process, or only its zombie (a dead child not yet reaped)."""
    if pid is None:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def started_version(pid: int | None) -> str | None:
    """The ``--version`` a local child was started with (None: no such process)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    given = [a.decode()[len("--version=") :] for a in args if a.startswith(b"--version=")]
    return given[-1] if given else None


def make_run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    allocate(f"sqlite://{run_dir / 'bfm.db'}", TOPOLOGY).save(run_dir)
    return run_dir


def _local(tmp_path: Path) -> Harness:
    run_dir = make_run_dir(tmp_path)
    endpoints = Endpoints.load(run_dir)

    def signal_to(signum: int) -> Callable[[Instance], None]:
        def send(instance: Instance) -> None:
            assert instance.pid is not None
            os.kill(instance.pid, signum)

        return send

    def answers(site: str, component: str) -> bool:
        return ping(endpoints.sites[site].modules[component], timeout_s=1.0)

    return Harness(
        LocalPlatform(run_dir, TOPOLOGY),
        signal_to(signal.SIGKILL),
        signal_to(signal.SIGSTOP),
        lambda i: process_gone(i.pid),
        answers,
        lambda i: started_version(i.pid),
    )


def _kubernetes(tmp_path: Path) -> Harness:
    run_dir = make_run_dir(tmp_path)
    endpoints = Endpoints.load(run_dir)
    double = KubeApiDouble().start()
    add_site_nodes(double, "bfm", TOPOLOGY.site_names)
    kubelet = KubeletDouble(double, "bfm").start()
    template = PodTemplate(platform="contract", extra_args=(f"--run-dir={run_dir}",))
    platform = KubernetesPlatform(
        double.configuration(), TOPOLOGY, namespace="bfm", template=template
    )
    core = client.CoreV1Api(client.ApiClient(double.configuration()))
    wait_until(  # the kubelets have written their node Leases
        lambda: all(f.reachable for f in platform.sites()),
        "every node Ready with its node Lease",
        ceiling_s=CEILING_S,
    )

    def running_pid(instance: Instance) -> int:
        wait_until(
            lambda: kubelet.pid(instance.instance_id) is not None,
            f"pod {instance.instance_id} runs",
            ceiling_s=CEILING_S,
        )
        pid = kubelet.pid(instance.instance_id)
        assert pid is not None
        return pid

    def pod_exists(name: str) -> bool:
        try:
            core.read_namespaced_pod(name, "bfm")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def started_at(instance: Instance) -> str | None:
        try:
            pod = core.read_namespaced_pod(instance.instance_id, "bfm")
        except ApiException:
            return None
        args = pod.spec.containers[0].args or []
        given = [a[len("--version=") :] for a in args if a.startswith("--version=")]
        return given[-1] if given else None

    def answers(site: str, component: str) -> bool:
        return ping(endpoints.sites[site].modules[component], timeout_s=1.0)

    def stop() -> None:
        kubelet.stop()
        double.stop()

    return Harness(
        platform,
        lambda i: os.kill(running_pid(i), signal.SIGKILL),
        lambda i: os.kill(running_pid(i), signal.SIGSTOP),
        lambda i: not pod_exists(i.instance_id) and kubelet.processes_gone(i.instance_id),
        answers,
        started_at,
        stop,
    )


# One entry per platform; the key is the pytest id.
PLATFORM_FACTORIES: dict[str, Callable[[Path], Harness]] = {
    "local": _local,
    "kubernetes": _kubernetes,
}


@pytest.fixture(params=list(PLATFORM_FACTORIES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    made = PLATFORM_FACTORIES[request.param](tmp_path)
    try:
        yield made
    finally:
        try:
            made.platform.close()
        finally:
            made.stop()


def exited(h: Harness, site: str, component: str) -> Instance:
    wait_until(
        lambda: h.platform.instance(site, component).state is InstanceState.EXITED,
        f"{site}/{component} reported exited",
        ceiling_s=CEILING_S,
    )
    return h.platform.instance(site, component)


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
    harness.pause(started)
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


# --- versions ----------------------------------------------------------------------------


def test_instances_run_the_default_version_unless_told(harness: Harness) -> None:
    assert harness.platform.version("a", "eap") == DEFAULT_VERSION
    assert {i.version for i in harness.platform.instances("a")} == {DEFAULT_VERSION}
    started = harness.platform.start("a", "eap")
    assert started.version == DEFAULT_VERSION
    assert harness.started_at(started) == DEFAULT_VERSION


def test_set_version_of_a_running_instance_runs_a_new_one_at_it(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    running_and_answering(harness, "a", "eap")
    changed = harness.platform.set_version("a", "eap", "2.0.0")
    assert changed.state is InstanceState.RUNNING
    assert changed.version == "2.0.0"
    assert changed.instance_id != started.instance_id
    assert changed.restarts == 0  # a version change is not a restart
    assert harness.gone(started)
    assert harness.started_at(changed) == "2.0.0"
    assert harness.platform.version("a", "eap") == "2.0.0"
    assert running_and_answering(harness, "a", "eap").instance_id == changed.instance_id
    listed = {i.component: i.version for i in harness.platform.instances("a")}
    assert listed == {"backbone": DEFAULT_VERSION, "eap": "2.0.0"}
    assert harness.platform.version("b", "eap") == DEFAULT_VERSION  # per site


def test_set_version_to_the_version_it_runs_changes_nothing(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    same = harness.platform.set_version("a", "eap", DEFAULT_VERSION)
    assert (same.instance_id, same.state) == (started.instance_id, InstanceState.RUNNING)
    changed = harness.platform.set_version("a", "eap", "2.0.0")
    again = harness.platform.set_version("a", "eap", "2.0.0")
    assert (again.instance_id, again.restarts) == (changed.instance_id, 0)
    assert not harness.gone(changed)


def test_a_restart_keeps_the_version(harness: Harness) -> None:
    harness.platform.start("a", "eap")
    changed = harness.platform.set_version("a", "eap", "2.0.0")
    restarted = harness.platform.restart("a", "eap")
    assert restarted.instance_id != changed.instance_id
    assert (restarted.version, restarted.restarts) == ("2.0.0", 1)
    assert harness.started_at(restarted) == "2.0.0"
    harness.kill(restarted)
    assert exited(harness, "a", "eap").version == "2.0.0"
    again = harness.platform.restart("a", "eap")  # as the supervisor does after a crash
    assert harness.started_at(again) == "2.0.0"


def test_set_version_of_a_stopped_instance_only_records_it(harness: Harness) -> None:
    recorded = harness.platform.set_version("a", "eap", "2.0.0")
    assert (recorded.state, recorded.version, recorded.instance_id) == (
        InstanceState.STOPPED,
        "2.0.0",
        "",
    )
    assert harness.platform.instance("a", "eap").state is InstanceState.STOPPED  # not started
    started = harness.platform.start("a", "eap")
    assert harness.started_at(started) == "2.0.0"
    harness.platform.stop("a", "eap")
    stopped = harness.platform.set_version("a", "eap", "3.0.0")
    assert (stopped.state, stopped.instance_id) == (InstanceState.STOPPED, started.instance_id)
    assert harness.started_at(harness.platform.start("a", "eap")) == "3.0.0"


def test_set_version_of_an_exited_or_given_up_instance_only_records_it(
    harness: Harness,
) -> None:
    started = harness.platform.start("a", "eap")
    harness.kill(started)
    exited(harness, "a", "eap")
    recorded = harness.platform.set_version("a", "eap", "2.0.0")
    assert recorded.state is InstanceState.EXITED  # still a crash for the supervisor
    assert (recorded.instance_id, recorded.version) == (started.instance_id, "2.0.0")
    harness.platform.give_up("a", "eap")
    given_up = harness.platform.set_version("a", "eap", "1.0.1")
    assert (given_up.state, given_up.version) == (InstanceState.GIVEN_UP, "1.0.1")
    assert harness.platform.instance("a", "eap").state is InstanceState.GIVEN_UP
    again = harness.platform.start("a", "eap")
    assert harness.started_at(again) == "1.0.1"
    running_and_answering(harness, "a", "eap")


def test_an_invalid_version_is_a_value_error_and_changes_nothing(harness: Harness) -> None:
    started = harness.platform.start("a", "eap")
    for bad in ("", "-1", "1.0 beta", "x" * 65):
        with pytest.raises(ValueError, match=r"is not valid.*for example 1\.4\.0"):
            harness.platform.set_version("a", "eap", bad)
    instance = harness.platform.instance("a", "eap")
    assert (instance.instance_id, instance.version) == (started.instance_id, DEFAULT_VERSION)


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
        lambda: platform.set_version(site, component, "2.0.0"),
        lambda: platform.version(site, component),
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
    assert data["eap"]["version"] == DEFAULT_VERSION
    changed = local.set_version("a", "eap", "2.0.0")
    data = read_instances(local.run_dir, "a")
    assert (data["eap"]["pid"], data["eap"]["version"]) == (changed.pid, "2.0.0")
    local.set_version("a", "backbone", "2.0.1")  # stopped: recorded, and written
    assert read_instances(local.run_dir, "a")["backbone"]["version"] == "2.0.1"
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


def test_local_platform_starts_at_the_versions_it_is_given(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    platform = LocalPlatform(run_dir, TOPOLOGY, versions={"eap": "1.4.0"})
    try:
        assert platform.version("b", "eap") == "1.4.0"
        assert platform.version("b", "backbone") == DEFAULT_VERSION
        assert started_version(platform.start("b", "eap").pid) == "1.4.0"
    finally:
        platform.close()
    with pytest.raises(ValueError, match="unknown component 'nope'"):
        LocalPlatform(run_dir, TOPOLOGY, versions={"nope": "1.4.0"})
    with pytest.raises(ValueError, match="'1 4' is not valid"):
        LocalPlatform(run_dir, TOPOLOGY, versions={"eap": "1 4"})


def test_a_custom_command_reads_the_version_when_it_starts(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    seen: list[str] = []

    def command(site: str, component: str) -> tuple[str, ...]:
        seen.append(platform.version(site, component))
        return (
            "component",
            "run",
            f"--site={site}",
            f"--component={component}",
            f"--run-dir={run_dir}",
            f"--version={seen[-1]}",
        )

    platform = LocalPlatform(run_dir, TOPOLOGY, command=command)
    try:
        platform.start("a", "eap")
        changed = platform.set_version("a", "eap", "2.0.0")
        assert seen == [DEFAULT_VERSION, "2.0.0"]
        assert started_version(changed.pid) == "2.0.0"
    finally:
        platform.close()


def _children_of(run_dir: Path, site: str, component: str) -> list[int]:
    """The live children of this test started for ``site``/``component`` in ``run_dir``."""
    wanted = {f"--run-dir={run_dir}", f"--site={site}", f"--component={component}"}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or process_gone(int(entry.name)):
            continue
        try:
            args = {a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0")}
        except OSError:
            continue
        if wanted <= args:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("other", ["restart", "stop_site"])
def test_a_change_during_a_version_change_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    """Changes of one instance take turns. A restart that came while the old version was
    stopping must not start a child beside the new one (it would lose the port and
    crash); a stop of the site (its process ends) must not be undone by the new child."""
    run_dir = make_run_dir(tmp_path)
    alive_at_start: list[list[int]] = []

    def command(site: str, component: str) -> tuple[str, ...]:
        alive_at_start.append(_children_of(run_dir, site, component))
        return (
            "component",
            "run",
            f"--site={site}",
            f"--component={component}",
            f"--run-dir={run_dir}",
            f"--version={platform.version(site, component)}",
        )

    platform = LocalPlatform(run_dir, TOPOLOGY, command=command)
    started = platform.start("a", "eap")
    stopping, other_done = threading.Event(), threading.Event()
    wait_or_kill = local_platform._wait_or_kill

    def slow_stop(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
        if proc is not None and proc.pid == started.pid and not stopping.is_set():
            stopping.set()  # the version change is stopping the old child
            # Taking turns, the other change waits for this one: bounded, not a deadlock.
            other_done.wait(timeout=0.5)
        wait_or_kill(proc, timeout_s)

    monkeypatch.setattr(local_platform, "_wait_or_kill", slow_stop)

    def act() -> None:
        assert stopping.wait(timeout=CEILING_S)
        try:
            if other == "restart":
                platform.restart("a", "eap")
            else:
                platform.stop_site("a")
        finally:
            other_done.set()

    # Threads that outlive the checks: a child dies with the thread that started it.
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            changed = pool.submit(platform.set_version, "a", "eap", "2.0.0")
            acted = pool.submit(act)
            changed.result(timeout=CEILING_S)
            acted.result(timeout=CEILING_S)
            assert alive_at_start and all(alive == [] for alive in alive_at_start)
            final = platform.instance("a", "eap")
            assert final.version == "2.0.0"
            if other == "restart":
                assert (final.state, final.restarts) == (InstanceState.RUNNING, 1)
                assert started_version(final.pid) == "2.0.0"
                assert _children_of(run_dir, "a", "eap") == [final.pid]
            else:
                assert final.state is InstanceState.STOPPED
                assert _children_of(run_dir, "a", "eap") == []
        finally:
            platform.close()


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
