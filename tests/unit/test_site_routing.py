"""A fenced site leaves its clients' routing through the platform, and rejoins with its
next session; the producer sends only to entry points that take traffic."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field

from test_producer import FakeRouter  # the router protocol, over real TCP

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.core.topology import default_topology
from failover.runtime.site_process import SiteProcess, SiteSettings
from failover.workload.producer import Producer


@dataclass
class RecordingPlatform:
    routes: list[tuple[str, bool]] = field(default_factory=list)

    def route(self, site: str, *, serving: bool) -> None:
        self.routes.append((site, serving))


@dataclass
class FakeSupervisor:
    platform: RecordingPlatform = field(default_factory=RecordingPlatform)


def test_a_fenced_site_leaves_the_routing_and_rejoins_with_its_next_session() -> None:
    supervisor, store, clock = FakeSupervisor(), MemoryStore(), FakeClock()
    process = SiteProcess(
        SiteSettings("a", topology=default_topology(shards_per_component=4)),
        store=store,
        clock=clock,
        supervisor=supervisor,  # type: ignore[arg-type]
    )
    assert process.agent is not None
    process.agent.renew()
    process._poll()
    process._poll()  # no change: routed once
    store.set_fault("unavailable")  # renewals fail: past its deadline the site fences
    clock.advance(process.settings.timing.lease_duration_s)
    process.agent.renew()
    process._poll()
    assert process.agent.agent.fenced
    store.set_fault(None)
    process.agent.renew()  # a new session
    process._poll()
    assert not process.agent.agent.fenced
    assert supervisor.platform.routes == [("a", True), ("a", False), ("a", True)]


def test_the_producer_sends_only_to_routers_whose_site_takes_traffic() -> None:
    left, serving = FakeRouter(refusals=0, site="a"), FakeRouter(refusals=0, site="b")
    history = io.StringIO()

    async def scenario() -> None:
        addresses = [await left.start(), await serving.start()]
        producer = Producer(
            addresses,
            rate_per_s=200.0,
            shard_count=4,
            history=history,
            wall=time.time,
            serving=lambda: [False, True],
        )
        stats = await asyncio.wait_for(producer.run(duration_s=0.2, give_up_s=3.0), 8.0)
        assert stats.acked == stats.sent >= 20
        await left.close()
        await serving.close()

    asyncio.run(scenario())
    assert left.seen == {}
    assert len(serving.seen) >= 20


def test_a_site_process_tells_whom_it_heard_within_the_renew_deadline() -> None:
    """What it hands the Kubernetes platform as BFM's own, faster, site facts."""
    clock = FakeClock()
    process = SiteProcess(
        SiteSettings("a", topology=default_topology(shards_per_component=4)),
        store=MemoryStore(),
        clock=clock,
    )
    assert process.heard("a") is True  # itself
    assert process.heard("b") is None  # never heard
    process._peer_report("b", True, clock.monotonic())
    assert process.heard("b") is True
    clock.advance(process.settings.timing.renew_deadline_s + 0.1)
    assert process.heard("b") is False
