"""A steady stream of backbone messages, each retried until acknowledged, with a history.

The history (JSON lines, wall-clock seconds) is what the checker judges: every message's
first send, and its acknowledgement with the site and epoch that applied it. A message is
sent to the first router that answers; refusals and lost connections are retried after
``retry_interval_s`` (with the same id: modules deduplicate), until ``give_up_s`` after
the end of the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from failover.workload.envelope import MODULE_OF_KIND, Envelope, shard_of
from failover.workload.linkpool import Link


@dataclass
class ProducerStats:
    sent: int = 0
    acked: int = 0
    retries: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    max_wait_s: float = 0.0
    recent_waits_s: list[float] = field(default_factory=list)  # since the last snapshot

    def snapshot(self) -> dict[str, Any]:
        """Counters, and latency percentiles of the acknowledgements since the last call."""
        waits, self.recent_waits_s = sorted(self.recent_waits_s), []

        def pct(q: float) -> float:
            return round(waits[min(len(waits) - 1, int(q * len(waits)))], 4) if waits else 0.0

        return {
            "sent": self.sent,
            "acked": self.acked,
            "retries": self.retries,
            "refused": dict(self.refused),
            "max_wait_s": round(self.max_wait_s, 3),
            "recent_acked": len(waits),
            "recent_p50_s": pct(0.5),
            "recent_p99_s": pct(0.99),
        }


class Producer:
    def __init__(
        self,
        routers: Sequence[tuple[str, int]],
        *,
        rate_per_s: float,
        shard_count: int,
        history: IO[str],
        wall: Callable[[], float],
        seed: int = 1,
        keys: int = 1000,
        retry_interval_s: float = 0.05,
        timeout_s: float = 1.0,
        max_in_flight: int = 4000,
    ) -> None:
        self.links = [Link(h, p, timeout_s=timeout_s) for h, p in routers]
        self.rate_per_s, self.shard_count = rate_per_s, shard_count
        self.history, self._wall = history, wall
        self.rng = random.Random(seed)
        self.keys = [f"device-{i}" for i in range(keys)]
        self.kinds = sorted(MODULE_OF_KIND)
        self.retry_interval_s = retry_interval_s
        self.stats = ProducerStats()
        self._slots = asyncio.Semaphore(max_in_flight)
        # Unique across runs into the same directory: modules would take a repeated id
        # for a retry and never apply it.
        self._prefix = f"p{seed}-{os.getpid()}-{int(wall() * 1000)}"

    def _record(self, **fields: Any) -> None:
        self.history.write(json.dumps(fields, separators=(",", ":")) + "\n")

    async def run(self, *, duration_s: float, give_up_s: float = 30.0) -> ProducerStats:
        """Send for ``duration_s``, then wait up to ``give_up_s`` for the unacknowledged."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        deadline = start + duration_s + give_up_s
        n = 0
        while (now := loop.time()) < start + duration_s:
            due = int((now - start) * self.rate_per_s) + 1
            while n < due:
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(self._message(n), deadline))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(min(0.01, 1.0 / self.rate_per_s))
        if tasks:
            await asyncio.wait(tasks)
        for link in self.links:
            await link.close()
        self.history.flush()
        return self.stats

    def _message(self, n: int) -> Envelope:
        key = self.rng.choice(self.keys)
        return Envelope(
            id=f"{self._prefix}-{n}",
            kind=self.kinds[n % len(self.kinds)],
            shard_key=key,
            shard=shard_of(key, self.shard_count),
            sent_at=self._wall(),
        )

    async def _deliver(self, env: Envelope, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        first_s = self._wall()
        self._record(op="send", id=env.id, component=env.component, shard=env.shard, t=first_s)
        self.stats.sent += 1
        frame = {"env": json.loads(env.to_json())}
        try:
            attempt = 0
            while loop.time() < deadline:
                link = self.links[attempt % len(self.links)]
                attempt += 1
                try:
                    answer = await link.request(frame)
                except (TimeoutError, ConnectionError, OSError):
                    answer = {"ok": False, "reason": "router-unreachable"}
                if answer.get("ok"):
                    acked_s = self._wall()
                    self._record(
                        op="ack",
                        id=env.id,
                        t=acked_s,
                        site=answer.get("site"),
                        epoch=answer.get("epoch"),
                    )
                    self.stats.acked += 1
                    self.stats.max_wait_s = max(self.stats.max_wait_s, acked_s - first_s)
                    self.stats.recent_waits_s.append(acked_s - first_s)
                    return
                reason = str(answer.get("reason"))
                self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
                self.stats.retries += 1
                await asyncio.sleep(self.retry_interval_s)
        finally:
            self._slots.release()
