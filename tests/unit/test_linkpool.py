"""The pipelined link over real TCP on 127.0.0.1: order, lost connections, timeouts."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable

import pytest

from failover.workload.linkpool import Link

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TEST_DEADLINE_S = 5.0


async def _serve(handler: Handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request in order with the request's ``n`` (and the connection's)."""
    try:
        while line := await reader.readline():
            writer.write(json.dumps({"n": json.loads(line)["n"]}).encode() + b"\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Connections:
    """A server whose ``n``-th connection (from 0) is handled by ``handlers[n]``; later
    connections echo."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = handlers
        self.count = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index, self.count = self.count, self.count + 1
        handler = self.handlers[index] if index < len(self.handlers) else _echo
        await handler(reader, writer)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(test(), TEST_DEADLINE_S)

    asyncio.run(bounded())


def test_pipelined_answers_come_back_in_request_order_on_one_connection() -> None:
    async def scenario() -> None:
        connections = Connections()
        server, port = await _serve(connections)
        link = Link("127.0.0.1", port, timeout_s=2.0)
        answers = await asyncio.gather(*(link.request({"n": i}) for i in range(200)))
        assert [a["n"] for a in answers] == list(range(200))
        assert connections.count == 1
        await link.close()
        server.close()

    _run(scenario)


def test_a_server_that_closes_fails_every_waiting_request_and_the_next_reconnects() -> None:
    read_before_closing: list[int] = []

    async def read_five_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for _ in range(5):
            read_before_closing.append(json.loads(await reader.readline())["n"])
        writer.close()

    async def scenario() -> None:
        connections = Connections(read_five_then_close)
        server, port = await _serve(connections)
        link = Link("127.0.0.1", port, timeout_s=2.0)
        outcomes = await asyncio.gather(
            *(link.request({"n": i}) for i in range(5)), return_exceptions=True
        )
        assert read_before_closing == [0, 1, 2, 3, 4]
        assert all(isinstance(o, ConnectionError) for o in outcomes), outcomes
        assert f"127.0.0.1:{port}" in str(outcomes[0])
        assert await link.request({"n": 7}) == {"n": 7}
        assert connections.count == 2
        await link.close()
        server.close()

    _run(scenario)


def test_a_server_that_never_answers_times_out_then_the_link_works_again() -> None:
    async def read_but_never_answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await reader.readline():
            pass
        writer.close()

    async def scenario() -> None:
        connections = Connections(read_but_never_answer)
        server, port = await _serve(connections)
        link = Link("127.0.0.1", port, timeout_s=0.2)
        started = time.monotonic()
        first = asyncio.ensure_future(link.request({"n": 0}))
        await asyncio.sleep(0.05)  # its own timeout must not be the one that ends it
        behind = asyncio.ensure_future(link.request({"n": 1}))
        with pytest.raises(TimeoutError):
            await first
        took_s = time.monotonic() - started
        assert 0.15 <= took_s < 1.0
        # Answers are in order: the one behind the lost answer cannot be matched either.
        with pytest.raises(ConnectionError):
            await behind
        assert await link.request({"n": 2}) == {"n": 2}
        assert connections.count == 2
        await link.close()
        server.close()

    _run(scenario)


def test_a_late_answer_on_a_spoiled_connection_never_answers_a_later_request() -> None:
    async def answer_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await asyncio.sleep(0.3)
        writer.write(b'{"n": "late"}\n')
        await writer.drain()
        writer.close()

    async def slow_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        await asyncio.sleep(0.4)  # still waiting when the late answer goes out
        writer.write(json.dumps({"n": json.loads(line)["n"]}).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, port = await _serve(Connections(answer_late, slow_echo))
        link = Link("127.0.0.1", port, timeout_s=0.1)
        with pytest.raises(TimeoutError):
            await link.request({"n": 0})
        link.timeout_s = 1.0
        assert await link.request({"n": 1}) == {"n": 1}
        await link.close()
        server.close()

    _run(scenario)


def test_connection_refused_is_an_os_error_and_a_later_server_is_found() -> None:
    async def scenario() -> None:
        server, port = await _serve(_echo)
        server.close()
        await server.wait_closed()
        link = Link("127.0.0.1", port, timeout_s=1.0)
        with pytest.raises(OSError):  # ConnectionRefusedError is both OSError and ConnectionError
            await link.request({"n": 0})
        again = await asyncio.start_server(_echo, "127.0.0.1", port)
        assert await link.request({"n": 1}) == {"n": 1}
        await link.close()
        again.close()

    _run(scenario)


def test_close_fails_what_is_still_waiting() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def scenario() -> None:
        server, port = await _serve(never)
        link = Link("127.0.0.1", port, timeout_s=2.0)
        waiting = asyncio.ensure_future(link.request({"n": 0}))
        await asyncio.sleep(0.05)
        await link.close()
        with pytest.raises(ConnectionError):
            await waiting
        server.close()

    _run(scenario)


def test_a_timeout_leaves_no_unretrieved_exception_behind() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    unhandled: list[str] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: unhandled.append(str(context.get("message")))
        )
        server, port = await _serve(silent)
        link = Link("127.0.0.1", port, timeout_s=0.1)
        with pytest.raises(TimeoutError):
            await link.request({"n": 0})
        await link.close()
        server.close()
        gc.collect()
        await asyncio.sleep(0)

    _run(scenario)
    assert unhandled == []


def test_after_a_timeout_a_probing_link_fails_fast_until_the_peer_answers_a_probe() -> None:
    answering = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def probe_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if b"ping" in line:
                if not answering.is_set():
                    continue  # still "paused": the probe goes unanswered
                writer.write(b'{"pong": true}\n')
            else:
                writer.write(json.dumps({"n": json.loads(line)["n"]}).encode() + b"\n")
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        connections = Connections(silent, *[probe_answer] * 100)
        server, port = await _serve(connections)
        link = Link("127.0.0.1", port, timeout_s=0.1, probe=b'{"ping": true}\n')
        with pytest.raises(TimeoutError):
            await link.request({"n": 0})
        assert link.suspect
        for _ in range(3):  # while the peer does not answer its probes: at once, no traffic
            started = time.monotonic()
            with pytest.raises(ConnectionError, match="probing"):
                await link.request({"n": 1})
            assert time.monotonic() - started < 0.05
            await asyncio.sleep(0.1)
        answering.set()
        for _ in range(50):
            if not link.suspect:
                break
            await asyncio.sleep(0.05)
        assert not link.suspect
        assert await link.request({"n": 2}) == {"n": 2}
        await link.close()
        server.close()

    _run(scenario)


def test_a_link_without_a_probe_tries_again_at_once_after_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def scenario() -> None:
        server, port = await _serve(Connections(silent))
        link = Link("127.0.0.1", port, timeout_s=0.1)
        with pytest.raises(TimeoutError):
            await link.request({"n": 0})
        assert not link.suspect
        assert await link.request({"n": 1}) == {"n": 1}
        await link.close()
        server.close()

    _run(scenario)


def test_a_connect_that_times_out_makes_the_next_ones_fail_fast_for_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer cut off answers no SYN: each request must not wait out a connect of its own.

    The silent network is a stand-in here (``open_connection`` that never completes); the
    partition runs (tests/scenarios/test_chaos.py) meet the real one.
    """
    attempts: list[float] = []

    async def silent(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        attempts.append(time.monotonic())
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    async def scenario() -> None:
        monkeypatch.setattr(asyncio, "open_connection", silent)
        link = Link("127.0.0.1", 9, timeout_s=0.2)
        waiting = [asyncio.create_task(link.open()) for _ in range(5)]
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert len(attempts) == 1  # one connect for all five waiters
        assert isinstance(results[0], TimeoutError)
        assert all(isinstance(r, ConnectionError) for r in results[1:])
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="just failed"):
            await link.open()
        assert time.monotonic() - started < 0.1 and len(attempts) == 1
        await asyncio.sleep(0.25)  # one timeout later it tries again
        with pytest.raises(TimeoutError):
            await link.open()
        assert len(attempts) == 2
        await link.close()

    asyncio.run(asyncio.wait_for(scenario(), TEST_DEADLINE_S))
