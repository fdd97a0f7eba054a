"""The supervisor: restarts a crashed instance after its backoff, gives up on a crash loop
(one ERROR line, given up on the platform and in the store), survives store errors.

The first part drives ``tick()`` by hand with a fake clock and an in-memory platform, so
every decision is checked exactly; the second runs the real loop over the local platform
with real processes (generous ceilings only).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from failover.adapters.fake_clock import FakeClock
from failover.adapters.local_platform import LocalPlatform, read_instances
from failover.adapters.memory_store import MemoryStore
from failover.adapters.system_clock import SystemClock
from failover.core.restarts import RestartTiming
from failover.core.topology import default_topology
from failover.core.versions import DEFAULT_VERSION, check_version
from failover.ports import (
    Instance,
    InstanceState,
    NodeFacts,
    Platform,
    PlatformError,
    SiteFacts,
)
from failover.runtime.supervisor import Supervisor, instances_key
from failover.workload.endpoints import allocate
from failover.workload.launcher import wait_until

TIMING = RestartTiming(first_backoff_s=0.5, max_backoff_s=4.0, give_up_after_crashes=3)
CEILING_S = 60.0


class FakePlatform:
    """A Platform in memory: the test makes instances crash; pids count up."""

    def __init__(self, site: str, components: tuple[str, ...]) -> None:
        self.site = site
        self._next_pid = 100
        self.state = dict.fromkeys(components, InstanceState.STOPPED)
        self.pid: dict[str, int | None] = dict.fromkeys(components)
        self.restarts = dict.fromkeys(components, 0)
        self.versions = dict.fromkeys(components, DEFAULT_VERSION)
        self.calls: list[tuple[str, str]] = []
        self.failing_starts = 0  # the next this many starts raise PlatformError

    def crash(self, component: str) -> None:
        assert self.state[component] is InstanceState.RUNNING
        self.state[component] = InstanceState.EXITED

    def _run(self, component: str) -> None:
        self._next_pid += 1
        self.pid[component] = self._next_pid
        self.state[component] = InstanceState.RUNNING

    def start(self, site: str, component: str) -> Instance:
        self.calls.append(("start", component))
        if self.failing_starts > 0:
            self.failing_starts -= 1
            raise PlatformError(f"cannot start {site}/{component}: no more processes")
        if self.state[component] is not InstanceState.RUNNING:
            self._run(component)
        return self.instance(site, component)

    def stop(self, site: str, component: str, *, timeout_s: float = 5.0) -> Instance:
        self.calls.append(("stop", component))
        self.state[component] = InstanceState.STOPPED
        return self.instance(site, component)

    def stop_site(self, site: str, *, timeout_s: float = 5.0) -> builtins.list[Instance]:
        return [self.stop(site, c) for c in self.state]

    def restart(self, site: str, component: str, *, timeout_s: float = 5.0) -> Instance:
        self.calls.append(("restart", component))
        self.restarts[component] += 1
        self._run(component)
        return self.instance(site, component)

    def give_up(self, site: str, component: str) -> Instance:
        self.calls.append(("give_up", component))
        self.state[component] = InstanceState.GIVEN_UP
        return self.instance(site, component)

    def set_version(
        self, site: str, component: str, version: str, *, timeout_s: float = 5.0
    ) -> Instance:
        self.calls.append(("set_version", component))
        check_version(version)
        changed, self.versions[component] = self.versions[component] != version, version
        if changed and self.state[component] is InstanceState.RUNNING:
            self._run(component)
        return self.instance(site, component)

    def version(self, site: str, component: str) -> str:
        return self.versions[component]

    def instance(self, site: str, component: str) -> Instance:
        assert site == self.site
        pid = self.pid[component]
        state = self.state[component]
        return Instance(
            site,
            component,
            state,
            self.restarts[component],
            pid=pid,
            instance_id=str(pid) if pid else "",
            exit_code=-9 if state is InstanceState.EXITED else None,
            version=self.versions[component],
        )

    def instances(self, site: str) -> builtins.list[Instance]:
        return [self.instance(site, c) for c in sorted(self.state)]

    def route(self, site: str, *, serving: bool) -> None:
        raise NotImplementedError

    def routing(self, site: str) -> bool:
        return True

    def sites(self) -> builtins.list[SiteFacts]:
        return [SiteFacts(self.site, "worker", tuple(self.state), (NodeFacts("n", True),))]

    def close(self) -> None:
        self.stop_site(self.site)


def _conforms(fake: FakePlatform) -> Platform:  # mypy checks the fake keeps the port's shape
    return fake


@pytest.fixture
def fake() -> FakePlatform:
    platform = FakePlatform("a", ("eap", "eep"))
    for c in ("eap", "eep"):
        platform.start("a", c)
    return platform


def supervisor_for(
    platform: FakePlatform, clock: FakeClock, store: MemoryStore | None = None
) -> Supervisor:
    return Supervisor(platform, "a", clock=clock, store=store, timing=TIMING)


def test_a_crash_is_restarted_after_the_first_backoff(fake: FakePlatform) -> None:
    labels = {"site": "a", "component": "eap"}
    restarts_before = REGISTRY.get_sample_value("bfm_component_restarts_total", labels) or 0.0
    clock = FakeClock()
    supervisor = supervisor_for(fake, clock)
    supervisor.tick()
    fake.crash("eap")
    supervisor.tick()  # sees the crash: due in 0.5 s
    assert ("restart", "eap") not in fake.calls
    clock.advance(0.4)
    supervisor.tick()
    assert fake.state["eap"] is InstanceState.EXITED
    clock.advance(0.1)
    supervisor.tick()
    assert fake.instance("a", "eap").state is InstanceState.RUNNING
    assert fake.restarts == {"eap": 1, "eep": 0}
    restarts = REGISTRY.get_sample_value("bfm_component_restarts_total", labels)
    assert restarts == restarts_before + 1


def test_backoff_doubles_with_each_crash_in_the_window(fake: FakePlatform) -> None:
    clock = FakeClock()
    supervisor = Supervisor(
        fake, "a", clock=clock, timing=RestartTiming(first_backoff_s=0.5, max_backoff_s=4.0)
    )
    waited = []
    for _ in range(4):
        fake.crash("eap")
        supervisor.tick()
        start = clock.monotonic()
        while fake.instance("a", "eap").state is not InstanceState.RUNNING:
            clock.advance(0.1)
            supervisor.tick()
        waited.append(round(clock.monotonic() - start, 1))
    assert waited == [0.5, 1.0, 2.0, 4.0]


def test_crash_loop_gives_up_logs_one_error_and_publishes_it(
    fake: FakePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    clock, store = FakeClock(), MemoryStore()
    supervisor = supervisor_for(fake, clock, store)
    caplog.set_level(logging.INFO, logger="bfm.supervisor")
    for _ in range(3):
        fake.crash("eap")
        for _ in range(50):
            supervisor.tick()
            clock.advance(0.1)
    assert fake.state["eap"] is InstanceState.GIVEN_UP
    assert fake.restarts["eap"] == 2  # restarted after crashes 1 and 2, not after 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    fields = vars(errors[0])
    assert fields["event"] == "component_crash_looping"
    assert (fields["site"], fields["component"]) == ("a", "eap")
    assert (fields["crashes"], fields["window_s"]) == (3, TIMING.crash_window_s)
    got = store.get(instances_key("a"))
    assert got is not None
    assert got.value["eap"] == {
        "state": "given_up",
        "restarts": 2,
        "given_up": True,
        "pid": fake.pid["eap"],
    }
    assert got.value["eep"]["state"] == "running"
    # stays down: later passes restart nothing
    calls = len(fake.calls)
    for _ in range(100):
        clock.advance(1.0)
        supervisor.tick()
    assert len(fake.calls) == calls


def test_crashes_spread_wider_than_the_window_never_give_up(fake: FakePlatform) -> None:
    clock = FakeClock()
    supervisor = supervisor_for(fake, clock)
    for _ in range(6):
        fake.crash("eap")
        supervisor.tick()
        clock.advance(TIMING.first_backoff_s)
        supervisor.tick()
        assert fake.state["eap"] is InstanceState.RUNNING
        clock.advance(TIMING.crash_window_s + 1)
    assert fake.restarts["eap"] == 6


def test_a_given_up_instance_started_again_gets_a_fresh_history(fake: FakePlatform) -> None:
    clock = FakeClock()
    supervisor = supervisor_for(fake, clock)
    for _ in range(3):
        fake.crash("eap")
        for _ in range(50):
            supervisor.tick()
            clock.advance(0.1)
    assert fake.state["eap"] is InstanceState.GIVEN_UP
    fake.start("a", "eap")  # the operator's fix
    supervisor.tick()
    fake.crash("eap")
    supervisor.tick()
    clock.advance(TIMING.first_backoff_s)
    supervisor.tick()
    assert fake.instance("a", "eap").state is InstanceState.RUNNING


def test_a_stopped_instance_is_left_stopped(fake: FakePlatform) -> None:
    clock = FakeClock()
    supervisor = supervisor_for(fake, clock)
    fake.stop("a", "eap")
    for _ in range(20):
        supervisor.tick()
        clock.advance(1.0)
    assert fake.state["eap"] is InstanceState.STOPPED
    assert ("restart", "eap") not in fake.calls


def test_the_loop_starts_every_instance_retries_a_failed_start_and_stops_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform = FakePlatform("a", ("eap", "eep"))
    platform.failing_starts = 3
    supervisor = Supervisor(platform, "a", clock=FakeClock(), timing=TIMING, poll_interval_s=0.01)
    caplog.set_level(logging.INFO, logger="bfm.supervisor")
    supervisor.start()
    try:
        wait_until(
            lambda: {i.state for i in platform.instances("a")} == {InstanceState.RUNNING},
            "every instance started",
            ceiling_s=CEILING_S,
        )
    finally:
        supervisor.stop()
    assert {i.state for i in platform.instances("a")} == {InstanceState.STOPPED}
    failed = [r for r in caplog.records if vars(r).get("event") == "start_failed"]
    assert sorted(vars(r)["component"] for r in failed) == ["eap", "eep"]  # once each


def test_store_errors_do_not_stop_it_and_the_document_catches_up(fake: FakePlatform) -> None:
    clock, store = FakeClock(), MemoryStore()
    supervisor = supervisor_for(fake, clock, store)
    store.set_fault("unavailable")
    fake.crash("eap")
    supervisor.tick()
    clock.advance(TIMING.first_backoff_s)
    supervisor.tick()
    assert fake.state["eap"] is InstanceState.RUNNING  # restarted all the same
    store.set_fault(None)
    assert store.get(instances_key("a")) is None
    supervisor.tick()
    got = store.get(instances_key("a"))
    assert got is not None
    assert got.value["eap"]["restarts"] == 1
    fake.crash("eap")
    supervisor.tick()
    got = store.get(instances_key("a"))
    assert got is not None
    assert got.value["eap"]["state"] == "exited"  # updated by compare-and-set


# --- the real loop over the local platform -----------------------------------------------


TOPOLOGY = default_topology(shards_per_component=2, components=("eap",))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    allocate(f"sqlite://{run / 'bfm.db'}", TOPOLOGY).save(run)
    return run


@pytest.fixture
def running(run_dir: Path) -> Iterator[tuple[LocalPlatform, Supervisor, MemoryStore]]:
    platform = LocalPlatform(run_dir, TOPOLOGY, sites=("a",))
    store = MemoryStore()
    supervisor = Supervisor(
        platform, "a", clock=SystemClock(), store=store, timing=TIMING, poll_interval_s=0.05
    )
    supervisor.start()
    try:
        yield platform, supervisor, store
    finally:
        supervisor.stop()
        platform.close()


def test_real_crash_is_restarted_with_a_new_pid(
    running: tuple[LocalPlatform, Supervisor, MemoryStore],
) -> None:
    platform, _, store = running
    wait_until(
        lambda: platform.instance("a", "eap").state is InstanceState.RUNNING,
        "started by the supervisor",
        ceiling_s=CEILING_S,
    )
    first = platform.instance("a", "eap")
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    wait_until(
        lambda: (
            platform.instance("a", "eap").restarts == 1
            and platform.instance("a", "eap").state is InstanceState.RUNNING
        ),
        "restarted after the kill",
        ceiling_s=CEILING_S,
    )
    again = platform.instance("a", "eap")
    assert again.pid != first.pid
    assert read_instances(platform.run_dir, "a")["eap"]["pid"] == again.pid

    def published() -> bool:
        got = store.get(instances_key("a"))
        return got is not None and got.value["eap"]["pid"] == again.pid

    wait_until(published, "the store document follows", ceiling_s=CEILING_S)


def _cmdline_version(pid: int | None) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return next(a.removeprefix("--version=") for a in args if a.startswith("--version="))


def test_a_version_change_is_neither_a_crash_nor_undone(
    running: tuple[LocalPlatform, Supervisor, MemoryStore], caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor polls every 50 ms while each old version stops: it never sees a crash."""
    platform, _, store = running
    caplog.set_level(logging.INFO, logger="bfm.supervisor")
    wait_until(
        lambda: platform.instance("a", "eap").state is InstanceState.RUNNING,
        "started by the supervisor",
        ceiling_s=CEILING_S,
    )
    pids = [platform.instance("a", "eap").pid]
    for version in ("2.0.0", "2.0.1", "1.0.0"):
        changed = platform.set_version("a", "eap", version)
        assert changed.state is InstanceState.RUNNING
        pids.append(changed.pid)

    def published() -> bool:  # a pass after the last change
        got = store.get(instances_key("a"))
        return got is not None and got.value["eap"]["pid"] == pids[-1]

    wait_until(published, "the supervisor saw the last version", ceiling_s=CEILING_S)
    final = platform.instance("a", "eap")
    assert (final.pid, final.restarts, final.state) == (pids[-1], 0, InstanceState.RUNNING)
    assert len(set(pids)) == 4
    assert _cmdline_version(final.pid) == "1.0.0"
    events = [vars(r).get("event") for r in caplog.records]
    assert "component_exited" not in events
    assert "component_restarted" not in events


def test_a_crash_after_a_version_change_is_restarted_at_that_version(
    running: tuple[LocalPlatform, Supervisor, MemoryStore],
) -> None:
    platform, _, _ = running
    wait_until(
        lambda: platform.instance("a", "eap").state is InstanceState.RUNNING,
        "started by the supervisor",
        ceiling_s=CEILING_S,
    )
    crashed = platform.instance("a", "eap")
    assert crashed.pid is not None
    os.kill(crashed.pid, signal.SIGKILL)
    wait_until(
        lambda: platform.instance("a", "eap").state is InstanceState.EXITED,
        "the kill is seen",
        ceiling_s=CEILING_S,
        poll_s=0.01,
    )
    # Well within the first backoff (0.5 s): exited still, so only recorded.
    recorded = platform.set_version("a", "eap", "2.0.0")
    assert (recorded.state, recorded.pid) == (InstanceState.EXITED, crashed.pid)
    wait_until(
        lambda: (
            platform.instance("a", "eap").state is InstanceState.RUNNING
            and platform.instance("a", "eap").version == "2.0.0"
        ),
        "running at 2.0.0",
        ceiling_s=CEILING_S,
    )
    restarted = platform.instance("a", "eap")
    assert restarted.restarts == 1  # by the supervisor, after its backoff
    assert _cmdline_version(restarted.pid) == "2.0.0"


def test_stop_stops_the_instances_it_started(
    running: tuple[LocalPlatform, Supervisor, MemoryStore],
) -> None:
    platform, supervisor, _ = running
    wait_until(
        lambda: platform.instance("a", "eap").state is InstanceState.RUNNING,
        "started by the supervisor",
        ceiling_s=CEILING_S,
    )
    pid = platform.instance("a", "eap").pid
    supervisor.stop()
    assert platform.instance("a", "eap").state is InstanceState.STOPPED
    assert pid is not None
    assert not Path(f"/proc/{pid}/cmdline").exists() or "Z" in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_real_crash_loop_is_given_up_logged_and_published(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A component that cannot start (its run directory has no endpoints.json) exits at once.
    broken = run_dir.parent / "broken"
    broken.mkdir()
    platform = LocalPlatform(
        run_dir,
        TOPOLOGY,
        sites=("a",),
        command=lambda s, c: (
            "component",
            "run",
            f"--site={s}",
            f"--component={c}",
            f"--run-dir={broken}",
        ),
    )
    store = MemoryStore()
    timing = RestartTiming(first_backoff_s=0.05, max_backoff_s=0.2, give_up_after_crashes=3)
    supervisor = Supervisor(
        platform, "a", clock=SystemClock(), store=store, timing=timing, poll_interval_s=0.05
    )
    caplog.set_level(logging.INFO, logger="bfm.supervisor")
    supervisor.start()
    try:
        wait_until(
            lambda: platform.instance("a", "eap").state is InstanceState.GIVEN_UP,
            "given up",
            ceiling_s=CEILING_S,
        )

        def published() -> bool:
            got = store.get(instances_key("a"))
            return got is not None and got.value["eap"]["given_up"] is True

        wait_until(published, "the store document says given up", ceiling_s=CEILING_S)
    finally:
        supervisor.stop()
        platform.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [vars(r)["event"] for r in errors] == ["component_crash_looping"]
    assert vars(errors[0])["crashes"] == 3
    assert platform.instance("a", "eap").restarts == 2
    data = read_instances(run_dir, "a")
    assert data["eap"]["given_up"] is True
    assert "no endpoints.json" in (run_dir / "comp-a-eap.log").read_text()
    json.dumps(data)  # the instances file is plain JSON for tools
