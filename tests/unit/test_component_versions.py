"""Component versions and health over real TCP on 127.0.0.1: a module's and a router's
counters (handled, own-fault errors, latency buckets), the pong that reports them for the
whole process, a ``+fail-after-ready`` version that passes the ping but refuses every
message (retried by the producer until the shard is served elsewhere: nothing lost), and
the site's probe reading the health (valid, missing, malformed, long or slow answers)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from failover.adapters.fake_clock import FakeClock
from failover.core.fencing import Assignment, EpochFence, Ownership
from failover.core.versions import LATENCY_BOUNDS_S, ComponentHealth, latency_bucket
from failover.runtime.probes import (
    MAX_ANSWER_BYTES,
    OK,
    UNANSWERED,
    ComponentProbes,
    ping_answer,
)
from failover.workload.envelope import Envelope
from failover.workload.ledger import Ledger, LedgerError
from failover.workload.linkpool import Link
from failover.workload.message_metrics import (
    REFUSAL_REASONS,
    HealthCounters,
    reason_label,
    summed_health,
)
from failover.workload.module import ModuleService
from failover.workload.producer import Producer
from failover.workload.router import PING, Router

TEST_DEADLINE_S = 10.0
BUCKETS = len(LATENCY_BOUNDS_S) + 1
SHARDS = 4
BAD = "2.0.0+fail-after-ready"


def _run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(test(), TEST_DEADLINE_S)

    asyncio.run(bounded())


def _frame(i: int, *, kind: str = "alarm", shard: int | None = None) -> bytes:
    env = Envelope(f"m{i}", kind, f"k{i}", i % SHARDS if shard is None else shard, 1.0)
    return json.dumps({"env": json.loads(env.to_json())}).encode() + b"\n"


class Grants:
    """Epoch per eap shard of one site, never running out."""

    def __init__(self, epochs: dict[int, int] | None = None) -> None:
        self.epochs = dict(epochs or {})

    def __call__(self, component: str, index: int) -> tuple[int, float] | None:
        if component != "eap" or index not in self.epochs:
            return None
        return self.epochs[index], float("inf")


ALL = {i: 3 for i in range(SHARDS)}


def _module(
    tmp_path: Path,
    grants: Callable[[str, int], tuple[int, float] | None],
    *,
    site: str = "a",
    clock: FakeClock | None = None,
    version: str = "1.0.0",
) -> ModuleService:
    clock = clock or FakeClock()
    return ModuleService(
        "eap",
        ledger=Ledger(tmp_path / f"ledger-{site}-eap.db", site=site),
        fence=EpochFence(),
        grants=grants,
        monotonic=clock.monotonic,
        wall=clock.wall,
        version=version,
    )


class Client:
    """One pipelined connection: send lines, read one answer line each."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @staticmethod
    async def connect(address: tuple[str, int]) -> Client:
        return Client(*await asyncio.open_connection(*address))

    async def send(self, *lines: bytes) -> list[dict[str, Any]]:
        self.writer.write(b"".join(lines))
        await self.writer.drain()
        return [json.loads(await asyncio.wait_for(self.reader.readline(), 5)) for _ in lines]

    async def health(self) -> ComponentHealth:
        (answer,) = await self.send(b'{"ping": true}\n')
        assert answer["pong"] is True
        return ComponentHealth.from_doc(answer["health"])

    def close(self) -> None:
        self.writer.close()


# --- counters -------------------------------------------------------------------------


def test_health_counters_add_a_batch_to_one_bucket_and_sum_across_parts() -> None:
    module, router = HealthCounters(), HealthCounters()
    module.handled_many(3, 0.004)
    module.handled_many(2, 0.3)
    module.handled_many(0, 99.0)  # nothing finished: nothing counted, not even the bucket
    module.errors += 1
    router.handled_many(4, 7.0)  # past the last bound: the +Inf bucket
    assert module.report("1.2.0") == ComponentHealth(
        "1.2.0", 5, 1, (3, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0)
    )
    total = summed_health("1.2.0", [module, router])
    assert (total.version, total.handled, total.errors) == ("1.2.0", 9, 1)
    assert total.latency_counts == (3, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4)
    assert summed_health("1.0.0", []) == ComponentHealth("1.0.0")


def test_a_module_counts_what_it_acknowledged_with_the_latency_to_its_commit(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    service = _module(tmp_path, Grants(ALL), clock=clock)
    real_apply = service.ledger.apply

    def slow_apply(*args: Any, **kwargs: Any) -> list[bool]:
        clock.advance(0.3)  # the commit takes 0.3 s after the batch was read
        return real_apply(*args, **kwargs)

    service.ledger.apply = slow_apply  # type: ignore[method-assign]

    async def scenario() -> None:
        client = await Client.connect(await service.start("127.0.0.1", 0))
        assert await client.health() == ComponentHealth("1.0.0")  # nothing yet
        answers = await client.send(*(_frame(i) for i in range(8)))
        assert all(a["ok"] for a in answers)
        answers = await client.send(_frame(0), _frame(1))  # retries: duplicates, acked
        assert all(a["ok"] for a in answers)
        health = await client.health()
        client.close()
        await service.close()
        assert (health.version, health.handled, health.errors) == ("1.0.0", 10, 0)
        expected = [0] * BUCKETS
        expected[latency_bucket(0.3)] = 10
        assert list(health.latency_counts) == expected

    _run(scenario)


def test_ownership_and_fencing_refusals_are_not_errors_but_a_ledger_failure_is(
    tmp_path: Path,
) -> None:
    service = _module(tmp_path, Grants({0: 3, 1: 3}))
    service.fence.learn("eap", 1, 5)  # a newer owner holds shard 1

    async def scenario() -> None:
        client = await Client.connect(await service.start("127.0.0.1", 0))
        answers = await client.send(_frame(0), _frame(1), _frame(2), _frame(3, kind="geo"))
        reasons = [a.get("reason") for a in answers]
        assert reasons == [None, "stale-epoch", "not-owner", "wrong-module"]
        health = await client.health()
        assert (health.handled, health.errors) == (1, 0)

        def broken(*_args: Any, **_kwargs: Any) -> list[bool]:
            raise LedgerError("disk full")

        service.ledger.apply = broken  # type: ignore[method-assign]
        answers = await client.send(_frame(4), _frame(8))
        assert [a["reason"] for a in answers] == ["ledger-error", "ledger-error"]
        health = await client.health()
        assert (health.handled, health.errors) == (1, 2)
        assert sum(health.latency_counts) == health.handled
        client.close()
        await service.close()

    _run(scenario)


def test_an_invalid_version_is_refused_by_module_and_router(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid"):
        _module(tmp_path, Grants(), version="no spaces please")
    with pytest.raises(ValueError, match="not valid"):
        Router("a", owners=dict, modules={}, version="")


# --- fail after ready ---------------------------------------------------------------


def _messages_total(outcome: str) -> float:
    labels = {"site": "a", "component": "eap", "kind": "alarm", "outcome": outcome}
    return REGISTRY.get_sample_value("bfm_messages_total", labels) or 0.0


def test_a_fail_after_ready_version_answers_pings_but_refuses_every_message(
    tmp_path: Path,
) -> None:
    assert "version-error" in REFUSAL_REASONS
    assert reason_label("version-error") == "version-error"
    service = _module(tmp_path, Grants(ALL), version=BAD)
    counted_before = _messages_total("version-error")

    async def scenario() -> None:
        address = await service.start("127.0.0.1", 0)
        # ready: the site's probe sees it alive, with its version and no errors yet
        state, health = await asyncio.to_thread(ping_answer, address, timeout_s=2.0)
        assert state == OK
        assert health == ComponentHealth(BAD)
        client = await Client.connect(address)
        answers = await client.send(*(_frame(i) for i in range(6)))
        assert answers == [
            {"id": f"m{i}", "ok": False, "reason": "version-error", "site": "a"} for i in range(6)
        ]
        health = await client.health()
        assert (health.version, health.handled, health.errors) == (BAD, 0, 6)
        assert sum(health.latency_counts) == 0
        client.close()
        await service.close()

    _run(scenario)
    assert len(service.ledger) == 0
    assert service.stats.refused == {"version-error": 6}
    assert _messages_total("version-error") - counted_before == 6


class Site:
    """The eap module of one site behind the router, with its version and grants."""

    def __init__(self, tmp_path: Path, name: str, version: str) -> None:
        self.grants = Grants()
        self.module = ModuleService(
            "eap",
            ledger=Ledger(tmp_path / f"ledger-{name}-eap.db", site=name),
            fence=EpochFence(),
            grants=self.grants,
            monotonic=time.monotonic,
            wall=time.time,
            version=version,
        )


def _eap_owned_by(site: str, epoch: int) -> dict[str, Ownership]:
    shards = tuple(Assignment(site, epoch) for _ in range(SHARDS))
    return {"eap": Ownership("eap", shards, epoch)}


def test_version_errors_are_retried_until_the_shards_move_and_nothing_acked_is_lost(
    tmp_path: Path,
) -> None:
    """Site a runs the bad version and owns every eap shard: each message is refused with
    version-error (through both routers) and kept; once the shards move to b, every one is
    applied there, once."""
    sites = {"a": Site(tmp_path, "a", BAD), "b": Site(tmp_path, "b", "1.0.0")}
    sites["a"].grants.epochs = dict.fromkeys(range(SHARDS), 3)
    owners = _eap_owned_by("a", 3)
    history = io.StringIO()

    async def scenario() -> None:
        modules = {n: {"eap": await s.module.start("127.0.0.1", 0)} for n, s in sites.items()}
        routers = [
            Router(n, owners=lambda: owners, modules=modules, timeout_s=1.0) for n in ("a", "b")
        ]
        addresses = [await r.start("127.0.0.1", 0) for r in routers]
        producer = Producer(
            addresses,
            rate_per_s=100.0,
            shard_count=SHARDS,
            history=history,
            wall=time.time,
            retry_interval_s=0.01,
            max_retry_interval_s=0.05,
            timeout_s=1.0,
            mix="uniform",
        )
        producer.kinds = ["alarm"]  # eap only: the one module of each site here
        run = asyncio.ensure_future(producer.run(duration_s=0.5, give_up_s=5.0))
        while producer.stats.refused.get("version-error", 0) < 20:
            await asyncio.sleep(0.01)
        # the controller moves the shards to b (a new epoch); a's grants are withdrawn
        sites["b"].grants.epochs = dict.fromkeys(range(SHARDS), 4)
        owners.update(_eap_owned_by("b", 4))
        sites["a"].grants.epochs = {}
        stats = await run
        assert stats.acked == stats.sent >= 20
        assert stats.refused.get("version-error", 0) >= 20
        # a router delivered the refusals onward: its own counters say handled, no errors
        assert sum(r.health.handled for r in routers) >= stats.sent + 20
        assert all(r.health.errors == 0 for r in routers)
        for router in routers:
            await router.close()
        for site in sites.values():
            await site.module.close()

    _run(scenario)
    assert len(sites["a"].module.ledger) == 0
    assert sites["a"].module.health.errors >= 20
    applied = [row.id for row in sites["b"].module.ledger.rows()]
    sent, acked, refused = set(), set(), set()
    for line in history.getvalue().splitlines():
        item = json.loads(line)
        {"send": sent, "ack": acked, "refused": refused}[item["op"]].add(item["id"])
        if item["op"] == "ack":
            assert item["site"] == "b"
    assert sorted(applied) == sorted(sent) == sorted(acked)
    assert refused <= sent


# --- the router and the process's pong ------------------------------------------------


def test_the_router_counts_what_it_delivered_and_the_pong_sums_the_process(
    tmp_path: Path,
) -> None:
    module = _module(tmp_path, Grants({0: 3, 1: 3}), version="1.4.0")

    async def scenario() -> None:
        module_address = await module.start("127.0.0.1", 0)
        owners = {"eap": Ownership("eap", (Assignment("a", 3),) * 2, 3)}
        router = Router(
            "a",
            owners=lambda: owners,
            modules={"a": {"eap": module_address}},
            timeout_s=1.0,
            version="1.4.0",
        )
        module.health_parts.append(router.health)  # as component_process does for backbone
        client = await Client.connect(await router.start("127.0.0.1", 0))
        answers = await client.send(_frame(0), _frame(1), _frame(2), _frame(3, kind="media"))
        assert [a["ok"] for a in answers] == [True, True, False, False]
        # shards 2 and 3 have no owner: refused by the router itself, not delivered
        assert [a["reason"] for a in answers[2:]] == ["no-owner", "no-owner"]
        report = router.health_report()
        assert (report.version, report.handled, report.errors) == ("1.4.0", 2, 0)
        assert sum(report.latency_counts) == 2
        pinger = await Client.connect(module_address)
        process = await pinger.health()
        assert (process.version, process.handled, process.errors) == ("1.4.0", 4, 0)
        assert sum(process.latency_counts) == 4
        pinger.close()
        client.close()
        await router.close()
        await module.close()

    _run(scenario)


def test_the_routers_link_probe_accepts_a_long_pong(tmp_path: Path) -> None:
    """The router's circuit breaker reads a module's whole pong, health and all."""
    module = _module(tmp_path, Grants(), version="9" * 64)
    for _ in range(50):
        module.health_parts.append(HealthCounters())
    module.health.handled_many(10**15, 1.0)

    async def scenario() -> None:
        host, port = await module.start("127.0.0.1", 0)
        link = Link(host, port, timeout_s=1.0, probe=PING, probe_interval_s=0.01)
        await asyncio.wait_for(link._probe_until_answered(), 3.0)
        await link.close()
        await module.close()

    _run(scenario)


# --- the site's probe ---------------------------------------------------------------


VALID = ComponentHealth("1.5.0", 7, 1, (7,) + (0,) * (BUCKETS - 1))


class Answering:
    """A server that answers each ping with ``reply`` (settable), in ``pieces`` writes."""

    def __init__(self, reply: bytes, *, pieces: int = 1, gap_s: float = 0.0) -> None:
        self.reply, self.pieces, self.gap_s = reply, pieces, gap_s
        self.pings = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return "127.0.0.1", int(self._server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            self.pings += 1
            reply, size = self.reply, -(-len(self.reply) // self.pieces)
            for start in range(0, len(reply), size):
                writer.write(reply[start : start + size])
                await writer.drain()
                await asyncio.sleep(self.gap_s)
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _pong(**fields: Any) -> bytes:
    return json.dumps({"pong": True, **fields}).encode() + b"\n"


async def _ping(reply: bytes, **kwargs: Any) -> tuple[str, ComponentHealth | None]:
    server = Answering(reply, **kwargs)
    address = await server.start()
    try:
        return await asyncio.to_thread(ping_answer, address, timeout_s=1.0)
    finally:
        server.close()


def test_the_probe_reads_a_valid_health_and_passes_a_pong_without_one() -> None:
    async def scenario() -> None:
        assert await _ping(_pong(health=VALID.to_doc())) == (OK, VALID)
        assert await _ping(_pong()) == (OK, None)
        assert await _ping(_pong(health=None)) == (OK, None)

    _run(scenario)


MALFORMED: list[Any] = [
    "1.0.0",
    [1, 2],
    {"handled": 1},  # no version
    {**VALID.to_doc(), "version": "bad version"},
    {**VALID.to_doc(), "handled": -1},
    {**VALID.to_doc(), "errors": "3"},
    {**VALID.to_doc(), "handled": True},
    {**VALID.to_doc(), "latency_counts": [1, 2]},
    {**VALID.to_doc(), "latency_counts": 5},
    {**VALID.to_doc(), "latency_counts": {"0": 1}},
    {"version": "1.0.0", "errors": 0, "latency_counts": [0] * BUCKETS},  # no handled
]


@pytest.mark.parametrize("health", MALFORMED)
def test_a_malformed_health_does_not_cost_the_liveness(health: Any) -> None:
    async def scenario() -> None:
        assert await _ping(_pong(health=health)) == (OK, None)

    _run(scenario)


def test_the_probe_reads_a_long_answer_in_pieces_up_to_its_newline() -> None:
    padding = "x" * 5000  # several KiB: more than one read
    long_pong = _pong(health=VALID.to_doc(), note=padding)

    async def scenario() -> None:
        assert await _ping(long_pong, pieces=7, gap_s=0.01) == (OK, VALID)
        assert await _ping(long_pong + b"trailing junk") == (OK, VALID)
        # no newline within the limit, or none before the peer closes: not an answer
        endless = b'{"pong": true, "note": "' + b"y" * (MAX_ANSWER_BYTES + 100)
        assert await _ping(endless) == (UNANSWERED, None)
        assert await _ping(long_pong[:-1]) == (OK, VALID)  # whole JSON, closed: accepted
        assert await _ping(long_pong[:100]) == (UNANSWERED, None)

    _run(scenario)


def test_a_probe_that_does_not_get_a_whole_line_in_time_is_unanswered() -> None:
    """Each piece comes within the timeout of the last, the whole line only after it:
    the timeout bounds the answer, not each read."""

    async def scenario() -> None:
        server = Answering(_pong(health=VALID.to_doc()), pieces=4, gap_s=0.3)
        address = await server.start()
        got = await asyncio.to_thread(ping_answer, address, timeout_s=0.4)
        assert got == (UNANSWERED, None)
        server.close()

    _run(scenario)


def test_component_probes_keep_the_last_valid_health(tmp_path: Path) -> None:
    async def wait_for(condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        server = Answering(_pong())
        module = _module(tmp_path, Grants(), version="3.1.0")
        addresses = {"eep": await server.start(), "eap": await module.start("127.0.0.1", 0)}
        probes = ComponentProbes(addresses, interval_s=0.02, timeout_s=0.5)
        probes.start()
        try:
            await wait_for(lambda: probes.alive("eep") and probes.alive("eap"))
            assert probes.health("eep") is None  # alive, but no health reported yet
            await wait_for(lambda: probes.health("eap") is not None)
            assert probes.health("eap") == ComponentHealth("3.1.0")
            assert probes.health("gsm") is None  # not probed at all
            server.reply = _pong(health=VALID.to_doc())
            await wait_for(lambda: probes.health("eep") is not None)
            assert probes.health("eep") == VALID
            server.reply = _pong(health={"version": "?"})
            seen = server.pings
            await wait_for(lambda: server.pings >= seen + 3)
            assert probes.alive("eep")
            assert probes.health("eep") == VALID  # a bad report keeps the last good one
        finally:
            await asyncio.to_thread(probes.stop)
            server.close()
            await module.close()

    _run(scenario)
