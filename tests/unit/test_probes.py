"""Liveness pings over real TCP on 127.0.0.1: a module answers, a closed port and a paused
process (connection accepted, never answered) do not."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from failover.core.fencing import EpochFence
from failover.runtime.probes import REFUSED, UNANSWERED, ComponentProbes, ping, ping_state
from failover.workload.ledger import Ledger
from failover.workload.module import ModuleService

TEST_DEADLINE_S = 8.0
INTERVAL_S = 0.02
TIMEOUT_S = 0.2
# "Within a few intervals": a probe round is one interval plus at most one ping timeout.
NOTICE_WITHIN_S = 5 * (INTERVAL_S + TIMEOUT_S)


def _module(tmp_path: Path) -> ModuleService:
    return ModuleService(
        "eap",
        ledger=Ledger(tmp_path / "ledger-a-eap.db", site="a"),
        fence=EpochFence(),
        grants=lambda _component, _index: None,
        monotonic=time.monotonic,
        wall=time.time,
    )


def _run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(test(), TEST_DEADLINE_S)

    asyncio.run(bounded())


@contextmanager
def _paused_process() -> Iterator[tuple[str, int]]:
    """A listening socket nobody serves: the kernel completes the connection (as it does
    for a stopped process) but no answer ever comes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield "127.0.0.1", int(listener.getsockname()[1])


def _closed_port() -> tuple[str, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return "127.0.0.1", int(probe.getsockname()[1])


async def _wait_until(condition: Callable[[], bool], within_s: float) -> float:
    """Seconds it took for ``condition`` to hold (fails after ``within_s``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, "condition not reached in time"
        await asyncio.sleep(INTERVAL_S / 2)
    return time.monotonic() - started


def test_a_module_answers_the_ping(tmp_path: Path) -> None:
    module = _module(tmp_path)

    async def scenario() -> None:
        address = await module.start("127.0.0.1", 0)
        assert await asyncio.to_thread(ping, address, timeout_s=1.0)
        await module.close()

    _run(scenario)
    assert len(module.ledger) == 0  # a ping is not work
    assert module.stats.refused == {}


def test_a_closed_port_is_not_alive() -> None:
    started = time.monotonic()
    assert not ping(_closed_port(), timeout_s=1.0)
    assert time.monotonic() - started < 1.0
    # Nobody listens: the process is gone, which the agent may act on at once.
    assert ping_state(_closed_port(), timeout_s=1.0) == REFUSED


def test_a_connection_accepted_but_never_answered_is_not_alive_within_the_timeout() -> None:
    with _paused_process() as address:
        started = time.monotonic()
        assert not ping(address, timeout_s=0.2)
        took_s = time.monotonic() - started
        # Paused, hung or only slow: not certain, so the detector waits for more of them.
        assert ping_state(address, timeout_s=0.2) == UNANSWERED
    assert 0.15 <= took_s < 1.0


def test_a_server_that_answers_something_else_is_not_alive() -> None:
    async def scenario() -> None:
        for reply in (b'{"pong": false}\n', b"[1]\n", b"hello\n", b""):

            async def answer(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bytes = reply
            ) -> None:
                await reader.readline()
                writer.write(reply)
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(answer, "127.0.0.1", 0)
            address = ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
            assert not await asyncio.to_thread(ping, address, timeout_s=1.0), reply
            server.close()

    _run(scenario)


def test_component_probes_follow_a_module_going_down_and_coming_back(tmp_path: Path) -> None:
    module = _module(tmp_path)

    async def scenario() -> None:
        address = await module.start("127.0.0.1", 0)
        with _paused_process() as paused:
            probes = ComponentProbes(
                {"eap": address, "eep": _closed_port(), "aam": paused},
                interval_s=INTERVAL_S,
                timeout_s=TIMEOUT_S,
            )
            probes.start()
            try:
                await _wait_until(lambda: probes.alive("eap"), NOTICE_WITHIN_S)
                await module.close()
                await _wait_until(lambda: not probes.alive("eap"), NOTICE_WITHIN_S)
                await module.start(*address)
                await _wait_until(lambda: probes.alive("eap"), NOTICE_WITHIN_S)
                assert not probes.alive("eep")
                assert not probes.alive("aam")
            finally:
                await asyncio.to_thread(probes.stop)
        await module.close()

    _run(scenario)


def test_a_component_without_an_address_counts_as_alive() -> None:
    probes = ComponentProbes({"eap": _closed_port()}, interval_s=INTERVAL_S, timeout_s=TIMEOUT_S)
    assert probes.alive("gsm")
    assert not probes.alive("eap")  # not yet probed: not known to be alive


def test_stop_ends_every_probe_thread_promptly() -> None:
    with _paused_process() as paused:
        probes = ComponentProbes(
            {"eap": paused, "eep": _closed_port()}, interval_s=INTERVAL_S, timeout_s=TIMEOUT_S
        )
        probes.start()
        time.sleep(INTERVAL_S)
        started = time.monotonic()
        probes.stop()
        assert time.monotonic() - started < TIMEOUT_S + 0.5
    assert not [t for t in threading.enumerate() if t.name in {"probe-eap", "probe-eep"}]
