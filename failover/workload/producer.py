"""A steady stream of backbone messages, each retried until acknowledged, with a history.

The history (JSON lines, wall-clock seconds) is what the checker judges: every message's
first send, and its acknowledgement with the site and epoch that applied it; each refusal
(which router, why) is there too, for the reader of a run. A message is
sent to the first router that answers; refusals and lost connections are retried through the
next router after ``retry_interval_s``, doubling per refusal up to ``max_retry_interval_s``
(with the same id: modules deduplicate), until ``give_up_s`` after the end of the run.
Every refusal is retried alike, whatever its reason: ownership and fencing refusals, a
module's own fault too (``version-error`` from a bad release, ``ledger-error``), which
only delays the message until its shard is served by a healthy instance, and a router's
``overloaded`` (backpressure: it never dropped the message, it did not take it).

Bounded: at most ``max_in_flight`` messages are sent and not yet acknowledged (each is in
the retry heap at most once); new messages wait for room, and a ``burst`` (N messages due
at once at the start: devices coming back online with their queued events) goes out as
the window allows. The latencies kept for the next ``snapshot`` are the latest
``RECENT_WAITS_KEPT``.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import json
import logging
import os
import random
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from bfm_observe.propagation import traceparent_of
from bfm_observe.roots import FORCE_SAMPLE, sample_root, unsampled_traceparent
from failover.workload.envelope import MODULE_OF_KIND, SCHEMA, shard_of
from failover.workload.linkpool import Link
from failover.workload.message_metrics import (
    Latency,
    default_tracer,
    exemplar_of,
    messages,
    reason_label,
    tracing_configured,
)

COMPONENT = "producer"
"""The ``component`` label of the producer's metrics."""


MIXES: dict[str, dict[str, int]] = {
    # every kind alike: each module sees a sixth of the traffic (tests, the demo)
    "uniform": dict.fromkeys(MODULE_OF_KIND, 1),
    # a site's backbone in operation: events and status dominate, alarms are rare
    "field": {"event": 45, "status": 25, "media": 12, "auth": 8, "geo": 8, "alarm": 2},
}
"""Message kinds by weight (``bfm produce --mix``)."""


def kind_cycle(mix: str, seed: int) -> list[str]:
    """The kinds in the proportions of ``mix``, in a fixed shuffled order per seed."""
    if mix not in MIXES:
        raise ValueError(f"unknown message mix {mix!r}; known: {', '.join(MIXES)}")
    cycle = [kind for kind, weight in sorted(MIXES[mix].items()) for _ in range(weight)]
    if len(set(cycle)) < len(cycle):
        random.Random(seed).shuffle(cycle)
    return cycle


RECENT_WAITS_KEPT = 100_000
"""Latencies kept between two snapshots (one a second in ``bfm produce``): a run nobody
snapshots must not keep one float per message for hours."""


def _recent_waits() -> deque[float]:
    return deque(maxlen=RECENT_WAITS_KEPT)


@dataclass
class ProducerStats:
    sent: int = 0
    acked: int = 0
    retries: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    given_up: int = 0  # still unacknowledged at the end: the checker's unacknowledged
    max_wait_s: float = 0.0
    recent_waits_s: deque[float] = field(default_factory=_recent_waits)  # since the snapshot

    def snapshot(self) -> dict[str, Any]:
        """Counters, and latency percentiles of the acknowledgements since the last call."""
        waits, self.recent_waits_s = sorted(self.recent_waits_s), _recent_waits()

        def pct(q: float) -> float:
            return round(waits[min(len(waits) - 1, int(q * len(waits)))], 4) if waits else 0.0

        return {
            "sent": self.sent,
            "acked": self.acked,
            "retries": self.retries,
            "refused": dict(self.refused),
            "given_up": self.given_up,
            "max_wait_s": round(self.max_wait_s, 3),
            "recent_acked": len(waits),
            "recent_p50_s": pct(0.5),
            "recent_p99_s": pct(0.99),
        }


@dataclass(slots=True)
class _Message:
    id: str
    kind: str
    component: str
    shard: int
    line: bytes  # the request, encoded once
    first_s: float
    span: Span | None  # "bfm.produce", from the first send to the ack (None: no tracing)
    last_router: int | None = None  # where it went last: a retry goes to the next router
    refusals: int = 0  # so far: each retry waits twice as long, up to the ceiling


DELAYED_S = 0.5
"""A message acknowledged this long after its first send, after a refusal, is logged as
delayed (``bfm logs '{component="producer"} |= "delayed"'``; its trace id leads to the
failover behind it with ``bfm trace``)."""
DELAYED_LOGS_PER_S = 20
"""At most this many such lines a second, and as many again of traced (sampled) messages: a
failover delays thousands at once."""
_log = logging.getLogger("bfm.producer")


class _LogBudget:
    """Up to ``per_s`` lines in each whole second of wall time."""

    def __init__(self, per_s: int) -> None:
        self.per_s, self._second, self._used = per_s, -1, 0

    def take(self, now_s: float) -> bool:
        second = int(now_s)
        if second != self._second:
            self._second, self._used = second, 0
        self._used += 1
        return self._used <= self.per_s


def _log_delayed(msg: _Message, wait_s: float, answer: dict[str, Any]) -> None:
    extra: dict[str, Any] = {
        "event": "delayed",
        "message_id": msg.id,
        "kind": msg.kind,
        "wait_s": round(wait_s, 3),
        "attempts": msg.refusals + 1,
        "owner_site": answer.get("site"),
    }
    found = exemplar_of(msg.span)
    if found is not None:  # sampled: its spans are kept, bfm trace can follow it
        extra.update(found)
    _log.warning(
        "message %s (%s) delayed %.3f s: acknowledged by site %s after %d attempt(s)%s",
        msg.id,
        msg.kind,
        wait_s,
        answer.get("site"),
        msg.refusals + 1,
        f"; trace {found['trace_id']}" if found is not None else "",
        extra=extra,
    )


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
        max_retry_interval_s: float = 0.4,
        timeout_s: float = 1.0,
        max_in_flight: int = 4000,
        tick_s: float = 0.005,
        serving: Callable[[], Sequence[bool]] | None = None,
        stay_first: bool = False,
        site: str = "a",
        tracer: Tracer | None = None,
        mix: str = "uniform",
        burst: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``serving()``: per router, whether its site takes client traffic now (the
        platform's routing); routers of a site that left it are tried only when no
        router is left. ``stay_first``: new messages go to the first router whenever it
        is open (a site's own devices, configured with their site's entry point), not to
        the router that acknowledged last; retries still move on. ``mix``: the kinds'
        proportions (``MIXES``). ``burst``: this many messages due at once at the start,
        on top of ``rate_per_s`` (which may then be 0); sent as ``max_in_flight`` allows,
        even after ``duration_s``.

        Telemetry: each message is one trace, its span ``bfm.produce`` (first send to ack,
        refusals as events) carried to routers and modules as the envelope's
        ``traceparent``; ``site`` labels the metrics. ``tracer`` (default BFM's): with
        neither a tracer given nor a tracer provider configured in the process, messages
        go without spans and without a traceparent (telemetry off costs nothing)."""
        self.links = [Link(h, p, timeout_s=timeout_s, tls=tls) for h, p in routers]
        self.rate_per_s, self.shard_count, self.burst = rate_per_s, shard_count, burst
        self.history, self._wall = history, wall
        self.rng = random.Random(seed)
        self.keys = [f"device-{i}" for i in range(keys)]
        self.kinds = kind_cycle(mix, seed)
        self.retry_interval_s, self.max_in_flight, self.tick_s = (
            retry_interval_s,
            max_in_flight,
            tick_s,
        )
        self.max_retry_interval_s = max(max_retry_interval_s, retry_interval_s)
        self.stats = ProducerStats()
        self._serving = serving
        self._stay_first = stay_first  # new messages to the first router whenever it is open
        self._open_routers = list(range(len(self.links)))
        self._in_flight = 0  # sent, neither acknowledged nor given up
        self._finish_requested = False
        self._retries: list[tuple[float, int, _Message]] = []  # heap: (due, seq, message)
        self._retry_seq = itertools.count()
        self._preferred = 0  # the router that acknowledged last: new messages go there
        self._deadline = 0.0
        self._sending: set[asyncio.Task[None]] = set()
        # Unique across runs into the same directory: modules would take a repeated id
        # for a retry and never apply it.
        self._prefix = f"p{seed}-{os.getpid()}-{int(wall() * 1000)}"
        self.site = site
        self._tracer = default_tracer(tracer)
        self._tracing = tracer is not None or tracing_configured()
        # BFM's own tracer follows the live sampler: decide before making a span
        self._fast_roots = tracer is None
        self._tally = messages(site, COMPONENT)  # added to the counter once per tick
        self._delayed_logs = _LogBudget(DELAYED_LOGS_PER_S)
        self._traced_delayed_logs = _LogBudget(DELAYED_LOGS_PER_S)
        self._latency = Latency(site, COMPONENT)

    async def run(self, *, duration_s: float, give_up_s: float = 30.0) -> ProducerStats:
        """Send for ``duration_s`` (or until ``finish``), then wait up to ``give_up_s`` for
        the unacknowledged."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._deadline = start + duration_s + give_up_s
        n = 0
        sending = True
        while True:
            now = loop.time()
            if sending and self._finish_requested:
                sending, self._deadline = False, now + give_up_s
            sending = sending and (now < start + duration_s or n < self.burst)
            self._refresh_routing()
            outgoing: dict[int, list[_Message]] = {}
            while self._retries and self._retries[0][0] <= now:
                _, _, msg = heapq.heappop(self._retries)
                outgoing.setdefault(self._next_router(msg), []).append(msg)
            if sending:
                due = self.burst + int((now - start) * self.rate_per_s) + (self.rate_per_s > 0)
                while n < due and self._in_flight < self.max_in_flight:
                    msg = self._message(n)
                    n += 1
                    outgoing.setdefault(self._next_router(msg), []).append(msg)
            elif self._in_flight == 0 or now > self._deadline + 2 * self.links[0].timeout_s:
                break
            for index, batch in outgoing.items():
                task = asyncio.create_task(self._send(index, batch))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            self._tally.flush()
            await asyncio.sleep(self.tick_s)
        for link in self.links:
            await link.close()
        for _, _, msg in self._retries:  # still waiting for a retry at the end: given up
            self._end_span(msg, "given-up")
        self.stats.given_up = self.stats.sent - self.stats.acked
        self._tally.flush()
        self.history.flush()
        return self.stats

    def finish(self) -> None:
        """Send no new message from now on; wait for those in flight as at the end of
        the duration (SIGTERM to ``bfm produce``; the demo's ``--settle``)."""
        self._finish_requested = True

    def _message(self, n: int) -> _Message:
        key = self.rng.choice(self.keys)
        kind = self.kinds[n % len(self.kinds)]
        shard = shard_of(key, self.shard_count)
        msg_id, component = f"{self._prefix}-{n}", MODULE_OF_KIND[kind]
        span, traceparent, traced = None, "", ""
        if self._tracing:
            # The attributes go in at the start: the sampler samples every alarm.
            attributes: dict[str, Any] = {
                "bfm.kind": kind,
                "messaging.message.id": msg_id,
                "bfm.shard": shard,
                "bfm.component": component,
            }
            if self._fast_roots and not sample_root(attributes):
                traceparent = unsampled_traceparent()  # no SDK span: most messages
            else:
                if self._fast_roots:
                    attributes[FORCE_SAMPLE] = True  # keep the decision just made
                span = self._tracer.start_span(
                    "bfm.produce", kind=SpanKind.PRODUCER, attributes=attributes
                )
                traceparent = traceparent_of(span)
                exemplar = exemplar_of(span)
                if exemplar is not None:  # sampled: the history names the trace to look up
                    traced = f',"trace_id":"{exemplar["trace_id"]}"'
        first_s = self._wall()
        env: dict[str, Any] = {
            "schema": SCHEMA,
            "id": msg_id,
            "kind": kind,
            "shard_key": key,
            "shard": shard,
            "sent_at": first_s,
        }
        if traceparent:
            env["traceparent"] = traceparent
        line = b'{"env":' + json.dumps(env, separators=(",", ":")).encode() + b"}\n"
        msg = _Message(msg_id, kind, component, shard, line, first_s, span)
        self.history.write(
            f'{{"op":"send","id":"{msg.id}","component":"{msg.component}",'
            f'"shard":{shard},"t":{first_s!r}{traced}}}\n'
        )
        self.stats.sent += 1
        self._in_flight += 1
        return msg

    def _refresh_routing(self) -> None:
        if self._serving is None:
            return
        flags = self._serving()
        serving = [i for i, ok in enumerate(flags) if ok and i < len(self.links)]
        self._open_routers = serving or list(range(len(self.links)))

    def _next_router(self, msg: _Message) -> int:
        """New messages go to the router that acknowledged last; a retry goes to the next
        open router after the one that refused or could not be reached (the refusing
        site's view may be the stale one: a site cut off from the store still thinks it
        owns; another router reaches the same module when its view agrees)."""
        routers = self._open_routers
        if msg.last_router is None:
            preferred = 0 if self._stay_first else self._preferred
            index = preferred if preferred in routers else routers[0]
        else:
            count = len(self.links)
            after = [(msg.last_router + k) % count for k in range(1, count + 1)]
            index = next(i for i in after if i in routers)
        msg.last_router = index
        return index

    async def _send(self, index: int, batch: list[_Message]) -> None:
        link = self.links[index]
        try:
            await link.open()
        except (TimeoutError, OSError):
            for msg in batch:
                self._refused(msg, "router-unreachable")
            return
        futures = link.send([msg.line for msg in batch])
        for msg, future in zip(batch, futures, strict=True):
            future.add_done_callback(functools.partial(self._answered, msg, index))

    def _answered(self, msg: _Message, index: int, future: asyncio.Future[bytes]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._refused(msg, "router-unreachable")
            return
        try:
            answer = json.loads(future.result())
        except ValueError:
            answer = {"reason": "bad-answer"}
        if not isinstance(answer, dict):
            answer = {"reason": "bad-answer"}
        if answer.get("ok") is not True:
            self._refused(msg, str(answer.get("reason")))
            return
        acked_s = self._wall()
        self.history.write(
            json.dumps(
                {
                    "op": "ack",
                    "id": msg.id,
                    "t": acked_s,
                    "site": answer.get("site"),
                    "epoch": answer.get("epoch"),
                },
                separators=(",", ":"),
            )
            + "\n"
        )
        self._preferred = index
        self._in_flight -= 1
        self.stats.acked += 1
        wait_s = acked_s - msg.first_s
        self.stats.max_wait_s = max(self.stats.max_wait_s, wait_s)
        self.stats.recent_waits_s.append(wait_s)
        self._tally.add(msg.kind, "acked")
        traced = exemplar_of(msg.span)
        self._latency.observe(msg.kind, max(0.0, wait_s), traced)
        if msg.refusals and wait_s >= DELAYED_S:
            # a traced message has its own budget: it is rare (sampled) and the one an
            # operator can follow to the failover, so untraced ones never crowd it out
            budget = self._delayed_logs if traced is None else self._traced_delayed_logs
            if budget.take(acked_s):
                _log_delayed(msg, wait_s, answer)
        span = msg.span
        if span is not None:
            if span.is_recording():
                site, epoch = answer.get("site"), answer.get("epoch")
                if isinstance(site, str):
                    span.set_attribute("bfm.owner_site", site)  # who applied it
                if isinstance(epoch, int):
                    span.set_attribute("bfm.epoch", epoch)
                span.set_attribute("bfm.attempts", msg.refusals + 1)
            self._end_span(msg, "acked")

    def _refused(self, msg: _Message, reason: str) -> None:
        """Retry through the next router (``_next_router``) after ``retry_interval_s``,
        doubled with each refusal of this message up to ``max_retry_interval_s``: during a
        failover thousands of messages are refused at once, and retrying them all every
        few milliseconds would load the very sites that are taking over."""
        msg.refusals += 1
        self.history.write(
            f'{{"op":"refused","id":"{msg.id}","t":{self._wall()!r},'
            f'"router":{msg.last_router},"reason":{json.dumps(reason)}}}\n'
        )
        self._tally.add(msg.kind, reason_label(reason))
        if msg.span is not None and msg.span.is_recording():
            msg.span.add_event(
                "bfm.refused",
                {
                    "bfm.reason": reason,
                    "bfm.router": -1 if msg.last_router is None else msg.last_router,
                    "bfm.attempt": msg.refusals,
                },
            )
        delay_s = min(
            self.max_retry_interval_s, self.retry_interval_s * 2 ** min(msg.refusals - 1, 16)
        )
        self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
        self.stats.retries += 1
        due = asyncio.get_running_loop().time() + delay_s
        if due < self._deadline:
            heapq.heappush(self._retries, (due, next(self._retry_seq), msg))
        else:
            self._in_flight -= 1  # given up: no ack line, the checker counts it unacknowledged
            self._tally.add(msg.kind, "given-up")
            self._end_span(msg, "given-up")

    @staticmethod
    def _end_span(msg: _Message, outcome: str) -> None:
        span, msg.span = msg.span, None
        if span is None:
            return
        if span.is_recording():
            span.set_attribute("bfm.outcome", outcome)
            if outcome != "acked":
                span.set_status(StatusCode.ERROR, outcome)
        span.end()
