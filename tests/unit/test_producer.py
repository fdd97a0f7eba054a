"""The producer over real TCP on 127.0.0.1: every message retried until acknowledged, one
send and one ack line per message in its history, routers that are down skipped."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from failover.cli.main import run as bfm
from failover.core.fencing import Assignment, EpochFence, Ownership
from failover.core.topology import DEFAULT_COMPONENTS
from failover.workload.envelope import Envelope, shard_of
from failover.workload.ledger import Ledger
from failover.workload.module import ModuleService
from failover.workload.producer import (
    DELAYED_LOGS_PER_S,
    RECENT_WAITS_KEPT,
    Producer,
    ProducerStats,
    _Message,
    kind_cycle,
)
from failover.workload.router import Router

SHARDS = 4
TEST_DEADLINE_S = 8.0


class FakeRouter:
    """Speaks the router protocol; refuses the first ``refusals`` attempts of each message."""

    def __init__(
        self,
        *,
        refusals: int = 1,
        site: str = "a",
        epoch: int = 5,
        drop: bool = False,
        reason: str = "not-owner",
    ) -> None:
        """``drop``: a refusal is a dropped connection instead of a refusing answer."""
        self.refusals, self.site, self.epoch, self.drop = refusals, site, epoch, drop
        self.reason = reason
        self.attempts: Counter[str] = Counter()
        self.seen: dict[str, Envelope] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return "127.0.0.1", int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def answer(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        env = Envelope.from_dict(frame["env"])  # the producer must send valid envelopes
        self.seen[env.id] = env
        self.attempts[env.id] += 1
        if self.attempts[env.id] <= self.refusals:
            if self.drop:
                return None
            return {"id": env.id, "ok": False, "reason": self.reason, "site": self.site}
        return {"id": env.id, "ok": True, "epoch": self.epoch, "site": self.site}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = self.answer(json.loads(line))
                if answer is None:
                    return  # the connection drops with this and every later request on it
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def _history(text: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """id -> op -> lines."""
    by_id: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in text.splitlines():
        item = json.loads(line)
        ops = by_id.setdefault(item["id"], {"send": [], "ack": [], "refused": []})
        ops[item["op"]].append(item)
    return by_id


def _producer(routers: list[tuple[str, int]], history: io.StringIO, **kwargs: Any) -> Producer:
    return Producer(
        routers,
        rate_per_s=kwargs.pop("rate_per_s", 200.0),
        shard_count=SHARDS,
        history=history,
        wall=time.time,
        retry_interval_s=0.01,
        timeout_s=1.0,
        **kwargs,
    )


def _closed_port() -> tuple[str, int]:
    """An address nobody listens on: a port the kernel just handed out and took back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return "127.0.0.1", int(probe.getsockname()[1])


def _run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(test(), TEST_DEADLINE_S)

    asyncio.run(bounded())


def test_every_message_is_retried_until_acked_with_one_send_and_one_ack_line() -> None:
    router = FakeRouter(refusals=1)
    history = io.StringIO()

    async def scenario() -> None:
        producer = _producer([await router.start()], history)
        started = time.monotonic()
        stats = await producer.run(duration_s=0.2, give_up_s=3.0)
        assert time.monotonic() - started < 2.0  # it does not wait out give_up_s
        n = len(router.seen)
        assert n >= 20
        assert (stats.sent, stats.acked, stats.retries) == (n, n, n)
        assert stats.refused == {"not-owner": n}
        assert 0.0 <= stats.max_wait_s < 1.0
        await router.close()

    _run(scenario)
    lines = _history(history.getvalue())
    assert set(lines) == set(router.seen)
    assert set(router.attempts.values()) == {2}
    for msg_id, ops in lines.items():
        assert len(ops["send"]) == 1, msg_id
        assert len(ops["ack"]) == 1, msg_id
        send, ack = ops["send"][0], ops["ack"][0]
        env = router.seen[msg_id]
        assert (send["component"], send["shard"]) == (env.component, env.shard)
        assert env.shard == shard_of(env.shard_key, SHARDS)
        assert (ack["site"], ack["epoch"]) == ("a", 5)
        assert send["t"] <= ack["t"]


def test_finish_ends_the_traffic_early_and_still_waits_for_every_ack() -> None:
    """``finish`` (SIGTERM to ``bfm produce``): no new message after it, and each one in
    flight, refused once and retried, is still acknowledged before ``run`` returns."""
    router = FakeRouter(refusals=1)
    history = io.StringIO()

    async def scenario() -> None:
        producer = _producer([await router.start()], history)
        started = time.monotonic()
        run = asyncio.ensure_future(producer.run(duration_s=30.0, give_up_s=3.0))
        await asyncio.sleep(0.2)
        producer.finish()
        finished = len(router.seen)
        stats = await run
        assert time.monotonic() - started < 5.0, "it did not end early"
        assert len(router.seen) <= finished + 10  # at most a batch already on its way
        assert stats.sent == stats.acked == len(router.seen) >= 20
        await router.close()

    _run(scenario)
    assert all(len(ops["ack"]) == 1 for ops in _history(history.getvalue()).values())


def test_messages_on_a_dropped_connection_are_retried_on_a_new_one() -> None:
    router = FakeRouter(refusals=1, drop=True)
    history = io.StringIO()

    async def scenario() -> None:
        producer = _producer([await router.start()], history)
        stats = await producer.run(duration_s=0.2, give_up_s=3.0)
        n = len(router.seen)
        assert (stats.sent, stats.acked) == (n, n)
        assert stats.retries == stats.refused["router-unreachable"] >= n
        await router.close()

    _run(scenario)
    lines = _history(history.getvalue())
    assert set(lines) == set(router.seen)
    assert all(len(ops["send"]) == len(ops["ack"]) == 1 for ops in lines.values())


def test_messages_go_to_the_router_that_is_up() -> None:
    up = FakeRouter(refusals=0, site="b")
    history = io.StringIO()

    async def scenario() -> None:
        producer = _producer([_closed_port(), await up.start()], history)
        stats = await producer.run(duration_s=0.1, give_up_s=3.0)
        n = len(up.seen)
        assert n >= 10
        assert (stats.sent, stats.acked) == (n, n)
        # Only the first messages try the router that is down: once the other one
        # acknowledged, new messages go there first.
        assert set(stats.refused) == {"router-unreachable"}
        assert 1 <= stats.refused["router-unreachable"] < n
        await up.close()

    _run(scenario)
    lines = _history(history.getvalue())
    assert {ops["ack"][0]["site"] for ops in lines.values()} == {"b"}
    assert all(len(ops["send"]) == len(ops["ack"]) == 1 for ops in lines.values())


def test_a_message_never_acknowledged_gives_up_without_an_ack_line() -> None:
    router = FakeRouter(refusals=10**9)
    history = io.StringIO()

    async def scenario() -> None:
        producer = _producer([await router.start()], history, rate_per_s=50.0)
        started = time.monotonic()
        stats = await producer.run(duration_s=0.05, give_up_s=0.3)
        assert time.monotonic() - started < 1.5
        assert stats.acked == 0
        assert stats.sent == len(router.seen) >= 1
        assert stats.retries >= stats.sent
        assert stats.given_up == stats.sent
        await router.close()

    _run(scenario)
    lines = _history(history.getvalue())
    assert all(len(ops["send"]) == 1 and not ops["ack"] for ops in lines.values())


def test_a_burst_goes_out_through_the_window_and_overloaded_refusals_are_retried() -> None:
    """Devices back online: every message of the burst due at once, at most
    ``max_in_flight`` of them out at a time, each refused ``overloaded`` once (the router's
    backpressure) and retried until acknowledged; none given up."""
    router = FakeRouter(refusals=1, reason="overloaded")
    history = io.StringIO()
    burst, window = 300, 50

    async def scenario() -> None:
        producer = _producer(
            [await router.start()], history, rate_per_s=0.0, burst=burst, max_in_flight=window
        )
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, producer._in_flight)
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        stats = await producer.run(duration_s=0.0, give_up_s=3.0)
        watcher.cancel()
        assert (stats.sent, stats.acked, stats.given_up) == (burst, burst, 0)
        assert stats.refused == {"overloaded": burst}
        assert 0 < peak <= window
        await router.close()

    _run(scenario)
    lines = _history(history.getvalue())
    assert len(lines) == burst
    assert all(len(ops["send"]) == len(ops["ack"]) == 1 for ops in lines.values())


def test_the_latencies_kept_for_the_next_snapshot_are_bounded() -> None:
    stats = ProducerStats()
    stats.recent_waits_s.extend(float(i) for i in range(RECENT_WAITS_KEPT + 10))
    assert len(stats.recent_waits_s) == RECENT_WAITS_KEPT
    assert stats.snapshot()["recent_acked"] == RECENT_WAITS_KEPT
    assert len(stats.recent_waits_s) == 0


class Site:
    """The modules of every component at one site, with grants the test hands out."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.name = name
        self.epochs: dict[tuple[str, int], int] = {}
        self.modules = {
            c: ModuleService(
                c,
                ledger=Ledger(tmp_path / f"ledger-{name}-{c}.db", site=name),
                fence=EpochFence(),
                grants=self.grant,
                monotonic=time.monotonic,
                wall=time.time,
            )
            for c in DEFAULT_COMPONENTS
        }

    def grant(self, component: str, index: int) -> tuple[int, float] | None:
        epoch = self.epochs.get((component, index))
        return None if epoch is None else (epoch, float("inf"))

    async def start(self) -> dict[str, tuple[str, int]]:
        return {c: await m.start("127.0.0.1", 0) for c, m in self.modules.items()}

    async def close(self) -> None:
        for module in self.modules.values():
            await module.close()

    def applied(self) -> dict[str, tuple[str, int, int]]:
        """id -> (component, shard, epoch) of everything in this site's ledgers."""
        return {
            row.id: (row.component, row.shard, row.epoch)
            for module in self.modules.values()
            for row in module.ledger.rows()
        }


def test_through_a_real_router_every_message_is_applied_once_where_its_shard_lives(
    tmp_path: Path,
) -> None:
    sites = {"a": Site(tmp_path, "a"), "b": Site(tmp_path, "b")}
    owner = {i: ("a" if i % 2 == 0 else "b", 3 + i) for i in range(SHARDS)}
    owners = {
        c: Ownership(c, tuple(Assignment(*owner[i]) for i in range(SHARDS)), 3 + SHARDS)
        for c in DEFAULT_COMPONENTS
    }
    sites["a"].epochs = {
        (c, i): e for c in DEFAULT_COMPONENTS for i, (s, e) in owner.items() if s == "a"
    }
    history = io.StringIO()

    async def scenario() -> None:
        modules = {name: await site.start() for name, site in sites.items()}
        router = Router("a", owners=lambda: owners, modules=modules, timeout_s=1.0)
        address = await router.start("127.0.0.1", 0)
        producer = _producer([address], history)
        run = asyncio.ensure_future(producer.run(duration_s=0.5, give_up_s=5.0))
        for _ in range(500):  # site b takes its grants only after a refusal was seen
            if producer.stats.refused.get("not-owner", 0) >= 1:
                break
            await asyncio.sleep(0.01)
        sites["b"].epochs = {
            (c, i): e for c in DEFAULT_COMPONENTS for i, (s, e) in owner.items() if s == "b"
        }
        stats = await run
        assert stats.acked == stats.sent >= 20
        assert stats.refused.get("not-owner", 0) >= 1
        assert stats.retries == sum(stats.refused.values())
        await router.close()
        for site in sites.values():
            await site.close()

    _run(scenario)
    lines = _history(history.getvalue())
    applied = {name: site.applied() for name, site in sites.items()}
    assert set(applied["a"]).isdisjoint(applied["b"])
    assert set(applied["a"]) | set(applied["b"]) == set(lines)
    for msg_id, ops in lines.items():
        assert len(ops["send"]) == len(ops["ack"]) == 1, msg_id
        send, ack = ops["send"][0], ops["ack"][0]
        site, epoch = owner[send["shard"]]
        assert (ack["site"], ack["epoch"]) == (site, epoch)
        assert applied[site][msg_id] == (send["component"], send["shard"], epoch)


def test_a_sites_own_devices_send_every_new_message_to_their_site_first() -> None:
    """Router a refuses every first attempt (the retry goes to b, which acknowledges); new
    messages still start at a with ``stay_first``, and follow b (the last to acknowledge)
    without it."""

    async def first_attempts(stay_first: bool) -> int:
        local, other = FakeRouter(refusals=1, site="a"), FakeRouter(refusals=0, site="b")
        producer = _producer(
            [await local.start(), await other.start()], io.StringIO(), stay_first=stay_first
        )
        await producer.run(duration_s=0.3, give_up_s=3.0)
        await local.close()
        await other.close()
        return len(local.seen)  # messages that went to a at least once

    async def scenario() -> None:
        sent_to_a_staying = await first_attempts(True)
        sent_to_a_following = await first_attempts(False)
        assert sent_to_a_staying >= 30  # every one of ~60 at 200 msg/s started at a
        assert sent_to_a_following <= 5  # after b's first ack, new ones went to b

    _run(scenario)


def test_message_mixes_keep_their_proportions() -> None:
    field = Counter(kind_cycle("field", seed=3))
    assert field["alarm"] == 2 and field["event"] == 45 and sum(field.values()) == 100
    assert kind_cycle("field", seed=3) == kind_cycle("field", seed=3)  # fixed per seed
    assert sorted(kind_cycle("uniform", seed=1)) == [
        "alarm",
        "auth",
        "event",
        "geo",
        "media",
        "status",
    ]
    with pytest.raises(ValueError, match="unknown message mix 'bursty'"):
        kind_cycle("bursty", seed=1)


def test_traced_delayed_messages_are_logged_even_in_a_burst_of_untraced_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failover acknowledges hundreds of delayed messages at once: the untraced ones use
    up their budget of lines, and the traced ones (the lines bfm trace can follow) still
    get theirs."""
    spans = TracerProvider().get_tracer("test")  # always on: every span is sampled
    now_s = 1_000_000.25
    producer = Producer(
        [("127.0.0.1", 9)],
        rate_per_s=1.0,
        shard_count=SHARDS,
        history=io.StringIO(),
        wall=lambda: now_s,
    )

    def acked(n: int, *, traced: bool) -> None:
        span = spans.start_span("bfm.produce") if traced else None
        msg = _Message(f"m{n}", "alarm", "eap", 0, b"", now_s - 1.0, span, refusals=2)
        producer._in_flight += 1
        future: asyncio.Future[bytes] = asyncio.Future(loop=loop)
        future.set_result(b'{"ok": true, "site": "b", "epoch": 3}')
        producer._answered(msg, 0, future)

    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level("WARNING", logger="bfm.producer"):
            for n in range(3 * DELAYED_LOGS_PER_S):
                acked(n, traced=False)
            for n in range(5):
                acked(1000 + n, traced=True)
    finally:
        loop.close()
    delayed = [r for r in caplog.records if getattr(r, "event", "") == "delayed"]
    traced = [r for r in delayed if getattr(r, "trace_id", "")]
    assert len(delayed) == DELAYED_LOGS_PER_S + 5
    assert len(traced) == 5


def test_bfm_produce_with_neither_a_rate_nor_a_burst_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bfm(["produce", f"--run-dir={tmp_path}", "--rate=0"]) == 2
    assert "give a --rate above 0 or a --burst" in capsys.readouterr().err
