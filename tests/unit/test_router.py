"""The router over real TCP on 127.0.0.1: each message goes to the module of its kind at the
site that owns its shard, with two real module services (sites a and b) behind it."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from failover.core.fencing import Assignment, EpochFence, Ownership
from failover.workload.envelope import Envelope
from failover.workload.ledger import Ledger
from failover.workload.module import ModuleService
from failover.workload.router import MAX_CLIENTS, MAX_IN_FLIGHT, Router

SHARDS = 8
TEST_DEADLINE_S = 8.0
ANSWER_TIMEOUT_S = 2.0


class Grants:
    """A site's grants as its module sees them: epoch per eap shard, never running out."""

    def __init__(self, epochs: dict[int, int] | None = None) -> None:
        self.epochs = dict(epochs or {})

    def __call__(self, component: str, index: int) -> tuple[int, float] | None:
        if component != "eap" or index not in self.epochs:
            return None
        return self.epochs[index], float("inf")


class Backbone:
    """Router of site a, eap modules at sites a and b, and the ownership the router reads."""

    def __init__(self, tmp_path: Path, owners: Mapping[int, tuple[str | None, int]]) -> None:
        self.grants = {"a": Grants(), "b": Grants()}
        self.modules = {
            site: ModuleService(
                "eap",
                ledger=Ledger(tmp_path / f"ledger-{site}-eap.db", site=site),
                fence=EpochFence(),
                grants=self.grants[site],
                monotonic=time.monotonic,
                wall=time.time,
            )
            for site in ("a", "b")
        }
        self.owners: dict[str, Ownership] = {}
        self.own(owners)
        self.addresses: dict[str, tuple[str, int]] = {}
        self.router: Router | None = None

    def own(self, owners: Mapping[int, tuple[str | None, int]]) -> None:
        """Set the eap ownership document (shard -> (site, epoch)) and each site's grants."""
        shards = tuple(Assignment(*owners.get(i, (None, 0))) for i in range(SHARDS))
        self.owners["eap"] = Ownership("eap", shards, max(a.epoch for a in shards))
        for site, grants in self.grants.items():
            grants.epochs = {i: e for i, (s, e) in owners.items() if s == site}

    async def start(
        self, *, max_in_flight: int = MAX_IN_FLIGHT, max_clients: int = MAX_CLIENTS
    ) -> tuple[str, int]:
        for site, module in self.modules.items():
            self.addresses[site] = await module.start("127.0.0.1", 0)
        self.router = Router(
            "a",
            owners=lambda: self.owners,
            modules={site: {"eap": address} for site, address in self.addresses.items()},
            timeout_s=1.0,
            max_in_flight=max_in_flight,
            max_clients=max_clients,
        )
        return await self.router.start("127.0.0.1", 0)

    async def close(self) -> None:
        if self.router is not None:
            await self.router.close()
        for module in self.modules.values():
            await module.close()

    def ledger_ids(self, site: str) -> list[str]:
        return [row.id for row in self.modules[site].ledger.rows()]


def _frame(msg_id: str, shard: int, *, kind: str = "alarm", **extra: Any) -> bytes:
    env = json.loads(Envelope(msg_id, kind, f"key-{msg_id}", shard, 1.0).to_json())
    return json.dumps({"env": {**env, **extra}}).encode() + b"\n"


class Producer:
    """One producer connection to the router."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @staticmethod
    async def connect(address: tuple[str, int]) -> Producer:
        return Producer(*await asyncio.open_connection(*address))

    async def send(
        self, *frames: bytes, timeout_s: float = ANSWER_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        self.writer.write(b"".join(frames))
        await self.writer.drain()
        return [
            json.loads(await asyncio.wait_for(self.reader.readline(), timeout_s)) for _ in frames
        ]

    def close(self) -> None:
        self.writer.close()


def _run(
    tmp_path: Path,
    owners: Mapping[int, tuple[str | None, int]],
    test: Callable[[Backbone, Producer], Awaitable[None]],
) -> Backbone:
    backbone = Backbone(tmp_path, owners)

    async def scenario() -> None:
        producer = await Producer.connect(await backbone.start())
        try:
            await test(backbone, producer)
        finally:
            producer.close()
            await backbone.close()

    async def bounded() -> None:
        await asyncio.wait_for(scenario(), TEST_DEADLINE_S)

    asyncio.run(bounded())
    return backbone


def test_a_message_for_a_shard_the_other_site_owns_is_applied_there(tmp_path: Path) -> None:
    async def test(backbone: Backbone, producer: Producer) -> None:
        answers = await producer.send(_frame("m1", 3))
        assert answers == [{"id": "m1", "ok": True, "epoch": 7, "site": "b"}]
        assert backbone.router is not None
        assert backbone.router.routed == 1

    backbone = _run(tmp_path, {3: ("b", 7)}, test)
    assert backbone.ledger_ids("b") == ["m1"]
    assert backbone.ledger_ids("a") == []
    assert [r.epoch for r in backbone.modules["b"].ledger.rows()] == [7]


def test_a_message_for_a_shard_this_site_owns_is_applied_here(tmp_path: Path) -> None:
    async def test(_: Backbone, producer: Producer) -> None:
        answers = await producer.send(_frame("m1", 2))
        assert answers == [{"id": "m1", "ok": True, "epoch": 4, "site": "a"}]

    backbone = _run(tmp_path, {2: ("a", 4)}, test)
    assert backbone.ledger_ids("a") == ["m1"]


def test_shards_without_a_reachable_owner_are_refused_as_no_owner(tmp_path: Path) -> None:
    async def test(backbone: Backbone, producer: Producer) -> None:
        backbone.owners["gsm"] = Ownership("gsm", (Assignment("b", 1),), 1)  # b runs no gsm
        answers = await producer.send(
            _frame("unowned", 0),  # eap shard 0 has no owner
            _frame("unknown-component", 1, kind="event"),  # no eep ownership document
            _frame("beyond", SHARDS + 5),  # the document has no such shard
            _frame("no-module", 0, kind="geo"),  # owner b has no gsm module
        )
        assert answers == [
            {"id": "unowned", "ok": False, "reason": "no-owner"},
            {"id": "unknown-component", "ok": False, "reason": "no-owner"},
            {"id": "beyond", "ok": False, "reason": "no-owner"},
            {"id": "no-module", "ok": False, "reason": "no-owner"},
        ]

    backbone = _run(tmp_path, {1: ("a", 1)}, test)
    assert backbone.ledger_ids("a") == backbone.ledger_ids("b") == []


def test_malformed_input_is_refused_with_a_reason_and_the_connection_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bfm.router")

    async def test(_: Backbone, producer: Producer) -> None:
        answers = await producer.send(
            _frame("bad-schema", 1, schema="bfm.envelope/9"),
            _frame("bad-kind", 1, kind="telepathy"),
            b"this is not json\n",
            b'{"no-env": 1}\n',
            b"[1, 2]\n",
            _frame("fine", 1),
        )
        assert [a["reason"] for a in answers[:5]] == ["malformed"] * 5
        assert [a["id"] for a in answers[:5]] == ["bad-schema", "bad-kind", "", "", ""]
        assert "schema" in answers[0]["detail"]
        assert "telepathy" in answers[1]["detail"]
        assert all(a["detail"] for a in answers[:5])
        assert answers[5] == {"id": "fine", "ok": True, "epoch": 2, "site": "b"}

    backbone = _run(tmp_path, {1: ("b", 2)}, test)
    assert backbone.ledger_ids("b") == ["fine"]
    # five refusals, one log line (the first at once; the rest summed up later)
    lines = [r for r in caplog.records if getattr(r, "event", "") == "malformed_message"]
    assert len(lines) == 1 and "bad-schema" in lines[0].getMessage()


def test_a_payload_that_cannot_be_forwarded_is_refused_not_the_connection(
    tmp_path: Path,
) -> None:
    async def test(_: Backbone, producer: Producer) -> None:
        env = json.loads(Envelope("nan", "alarm", "k", 1, 1.0).to_json())
        nan_frame = json.dumps({"env": {**env, "payload": {"x": float("nan")}}}).encode()
        answers = await producer.send(nan_frame + b"\n", _frame("after", 1), timeout_s=0.5)
        assert answers[0]["reason"] == "malformed"
        assert answers[1] == {"id": "after", "ok": True, "epoch": 2, "site": "b"}

    _run(tmp_path, {1: ("b", 2)}, test)


def test_a_module_that_never_came_up_is_unreachable_until_it_does(tmp_path: Path) -> None:
    async def test(backbone: Backbone, producer: Producer) -> None:
        await backbone.modules["b"].close()  # its port is closed before the first message
        answers = await producer.send(_frame("down", 5))
        assert answers == [{"id": "down", "ok": False, "reason": "module-unreachable", "site": "b"}]
        await backbone.modules["b"].start(*backbone.addresses["b"])
        answers = await producer.send(_frame("up", 5))
        assert answers == [{"id": "up", "ok": True, "epoch": 3, "site": "b"}]

    backbone = _run(tmp_path, {5: ("b", 3)}, test)
    assert backbone.ledger_ids("b") == ["up"]


def test_a_module_killed_while_connected_is_unreachable_until_it_returns(tmp_path: Path) -> None:
    async def test(backbone: Backbone, producer: Producer) -> None:
        assert (await producer.send(_frame("before", 5)))[0]["ok"]
        await backbone.modules["b"].close()  # it also drops the router's open connection
        answers = await producer.send(_frame("down", 5), _frame("also-down", 5))
        assert answers == [
            {"id": "down", "ok": False, "reason": "module-unreachable", "site": "b"},
            {"id": "also-down", "ok": False, "reason": "module-unreachable", "site": "b"},
        ]
        await backbone.modules["b"].start(*backbone.addresses["b"])
        answers = await producer.send(_frame("back", 5))
        assert answers == [{"id": "back", "ok": True, "epoch": 3, "site": "b"}]

    backbone = _run(tmp_path, {5: ("b", 3)}, test)
    assert backbone.ledger_ids("b") == ["before", "back"]


def test_many_pipelined_messages_are_answered_in_order_from_both_sites(tmp_path: Path) -> None:
    owners = {i: ("a" if i % 2 else "b", 10 + i) for i in range(SHARDS)}
    count = 400

    async def test(_: Backbone, producer: Producer) -> None:
        answers = await producer.send(*(_frame(f"m{i}", i % SHARDS) for i in range(count)))
        assert [a["id"] for a in answers] == [f"m{i}" for i in range(count)]
        assert all(a["ok"] for a in answers)
        assert [a["site"] for a in answers] == [owners[i % SHARDS][0] for i in range(count)]
        assert [a["epoch"] for a in answers] == [owners[i % SHARDS][1] for i in range(count)]

    backbone = _run(tmp_path, owners, test)
    assert sorted(backbone.ledger_ids("a")) == sorted(f"m{i}" for i in range(count) if i % 2)
    assert len(backbone.ledger_ids("b")) == count // 2


def test_an_ownership_change_takes_effect_for_the_next_message(tmp_path: Path) -> None:
    async def test(backbone: Backbone, producer: Producer) -> None:
        first = await producer.send(_frame("first", 4))
        backbone.own({4: ("b", 2)})  # failover of shard 4 to site b under epoch 2
        second = await producer.send(_frame("second", 4))
        assert first == [{"id": "first", "ok": True, "epoch": 1, "site": "a"}]
        assert second == [{"id": "second", "ok": True, "epoch": 2, "site": "b"}]

    backbone = _run(tmp_path, {4: ("a", 1)}, test)
    assert backbone.ledger_ids("a") == ["first"]
    assert backbone.ledger_ids("b") == ["second"]


def test_a_router_with_an_old_map_causes_a_refusal_never_a_wrong_write(tmp_path: Path) -> None:
    async def test(backbone: Backbone, producer: Producer) -> None:
        backbone.grants["a"].epochs = {}  # site a gave shard 6 up; the router has not seen it
        backbone.grants["b"].epochs = {6: 2}
        answers = await producer.send(_frame("m1", 6))
        assert answers == [{"id": "m1", "ok": False, "reason": "not-owner", "site": "a"}]

    backbone = _run(tmp_path, {6: ("a", 1)}, test)
    assert backbone.ledger_ids("a") == backbone.ledger_ids("b") == []


def _bounded(backbone: Backbone, test: Callable[[], Awaitable[None]]) -> None:
    async def scenario() -> None:
        try:
            await test()
        finally:
            await backbone.close()

    asyncio.run(asyncio.wait_for(scenario(), TEST_DEADLINE_S))


def _router(backbone: Backbone) -> Router:
    assert backbone.router is not None
    return backbone.router


def test_a_flood_beyond_the_in_flight_bound_is_refused_overloaded_and_nothing_is_dropped(
    tmp_path: Path,
) -> None:
    owners = {i: ("a" if i % 2 else "b", 3) for i in range(SHARDS)}
    backbone, count, bound = Backbone(tmp_path, owners), 600, 40

    async def test() -> None:
        producer = await Producer.connect(await backbone.start(max_in_flight=bound))
        router = _router(backbone)
        waiting = [f"m{i}" for i in range(count)]
        refused = 0
        for _ in range(50):  # retried, as the producer does, until every one is applied
            answers = await producer.send(*(_frame(m, int(m[1:]) % SHARDS) for m in waiting))
            reasons = [a.get("reason", "ok") for a in answers]
            # a loaded machine may also time a module out: retried like the rest
            assert set(reasons) <= {"ok", "overloaded", "module-unreachable"}, set(reasons)
            waiting = [a["id"] for a in answers if not a["ok"]]
            refused += reasons.count("overloaded")
            if not waiting:
                break
        producer.close()
        assert not waiting
        assert refused > 0  # the flood did go over the bound
        assert 0 < router.peak_in_flight <= bound
        assert router.in_flight == 0

    _bounded(backbone, test)
    applied = backbone.ledger_ids("a") + backbone.ledger_ids("b")
    assert sorted(applied) == sorted(f"m{i}" for i in range(count))  # each once, none lost


def test_a_client_that_does_not_read_its_answers_is_not_read_either(tmp_path: Path) -> None:
    backbone, count = Backbone(tmp_path, {1: ("b", 2)}), 20_000
    template = _frame("m-NUMBER", 1)

    async def test() -> None:
        address = await backbone.start()
        router = _router(backbone)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers pile up fast
        sock.connect(address)
        sock.setblocking(False)
        _, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"".join(template.replace(b"NUMBER", b"%d" % i) for i in range(count)))
        routed = -1
        while routed != router.routed:  # until the router stops taking more
            routed = router.routed
            await asyncio.sleep(0.5)
        assert 0 < router.routed < count // 2  # about six reads' worth: it stopped reading
        writer.close()

    _bounded(backbone, test)


def test_connections_beyond_the_bound_are_closed_and_the_others_go_on(tmp_path: Path) -> None:
    backbone = Backbone(tmp_path, {1: ("b", 2)})

    async def test() -> None:
        address = await backbone.start(max_clients=2)
        router = _router(backbone)
        first, second = await Producer.connect(address), await Producer.connect(address)
        assert (await first.send(_frame("m1", 1)))[0]["ok"]
        third = await Producer.connect(address)
        assert await asyncio.wait_for(third.reader.read(), ANSWER_TIMEOUT_S) == b""  # closed
        assert router.refused_clients == 1
        assert (await second.send(_frame("m2", 1)))[0]["ok"]
        for producer in (first, second, third):
            producer.close()

    _bounded(backbone, test)
