"""The simulated producer: one closed loop per shard, retrying until acknowledged.

It learns routes (who owns which shard) by reading ownership documents from the store,
on a failure and every ``route_refresh_interval_s``; between refreshes it keeps sending
to the site it knows, as real clients with a cached route do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from failover.chaos.sim_sites import Message
from failover.ports import StoreUnavailable
from failover.runtime.documents import ownership_key, ownership_parser

if TYPE_CHECKING:
    from failover.chaos.simulation import Simulation


class Producer:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.routes: dict[tuple[str, int], str | None] = {}
        self.routes_at_s = float("-inf")
        self.next_id = 0
        self._ownership = ownership_parser()
        cfg = sim.config
        for c in cfg.topology.components:
            for i in range(cfg.topology.shards_per_component):
                sim.at(sim.rng.uniform(0.5, 0.5 + cfg.send_interval_s), self.send_new, c, i)

    def send_new(self, component: str, index: int) -> None:
        self.next_id += 1
        msg = Message(self.next_id, component, index, self.sim.now)
        self.sim.history.send(msg.message_id, (component, index), self.sim.now)
        self.attempt(msg)

    def refresh(self) -> None:
        sim = self.sim
        if sim.now - self.routes_at_s < sim.config.retry_interval_s / 2:
            return
        try:
            for c in sim.config.topology.components:
                got = sim.store.get(None, ownership_key(c))
                if got is not None:
                    for i, a in enumerate(self._ownership(got).shards):
                        self.routes[(c, i)] = a.owner
        except StoreUnavailable:
            return
        self.routes_at_s = sim.now

    def attempt(self, msg: Message) -> None:
        if msg.done:
            return
        sim = self.sim
        msg.attempt += 1
        msg.attempt_sent_s = sim.now
        if sim.now - self.routes_at_s >= sim.config.route_refresh_interval_s:
            self.refresh()
        shard = (msg.component, msg.index)
        site = self.routes.get(shard)
        proc = sim.workers.get(site) if site else None
        if proc is None or proc.dead:
            self.failed(msg, msg.attempt)  # no route, or connection refused
            return
        result, redirect = proc.receive(msg, msg.attempt)
        if result == "refused":
            if redirect is not None:
                self.routes[shard] = redirect
            self.failed(msg, msg.attempt)
        elif result == "queued":
            self.wait_for(msg, msg.attempt)

    def wait_for(self, msg: Message, attempt: int) -> None:
        """No answer will come soon (the site is paused): give up after the send timeout."""
        at_s = max(self.sim.now, msg.attempt_sent_s + self.sim.config.send_timeout_s)
        self.sim.at(at_s, self.failed, msg, attempt)

    def failed(self, msg: Message, attempt: int) -> None:
        if msg.done or attempt != msg.attempt:
            return
        self.refresh()
        self.sim.at(self.sim.now + self.sim.config.retry_interval_s, self.attempt, msg)

    def acked(self, msg: Message) -> None:
        if msg.done:
            return
        msg.done = True
        self.sim.history.ack(msg.message_id, self.sim.now)
        next_s = max(self.sim.now, msg.first_sent_s + self.sim.config.send_interval_s)
        self.sim.at(next_s, self.send_new, msg.component, msg.index)
