"""Pipelined request/answer connections (newline-delimited JSON) to one peer each.

Answers come back in request order, so each connection keeps a FIFO of waiting futures
with their deadlines. One timer per connection watches the oldest request (not one per
request: that is what lets a router or producer pass thousands of messages a second).
When the oldest passes its deadline it fails with ``TimeoutError`` and the connection is
spoiled: everything behind it fails with ``ConnectionError``, and the next request opens a
new connection. A broken connection fails everything waiting on it the same way.

Two ways in: ``request(dict) -> dict`` for one message, and ``send(lines)`` for a batch of
already-encoded lines, returning one future of raw answer bytes per line (the fast path:
nothing is parsed or encoded again on the way through).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

AnswerFuture = asyncio.Future[bytes]


class Link:
    """One pipelined connection to ``(host, port)``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float,
        probe: bytes | None = None,
        probe_interval_s: float = 0.1,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``probe``: a request line the peer answers with a line holding ``pong`` when it
        is serving (a circuit breaker; a module's pong carries its health too, a few
        hundred bytes: the whole line is read, up to the stream's 64 KiB limit). After a
        timeout the link then fails at once, instead of sending more work to a peer that
        stopped answering (a paused process's kernel still accepts connections, and every
        request would wait out the timeout again), and it probes the peer every
        ``probe_interval_s`` on a connection of its own until it answers. ``tls``: connect
        with TLS (``failover.adapters.tls``), checking the peer's certificate for ``host``."""
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.tls = tls
        self.probe, self.probe_interval_s = probe, probe_interval_s
        self._prober: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[tuple[AnswerFuture, float]] = deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()
        self._failed_connects = 0
        self._down_until_s = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    @property
    def suspect(self) -> bool:
        """The peer stopped answering and has not answered a probe since."""
        return self._prober is not None and not self._prober.done()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and wait for its answer (``TimeoutError``/``ConnectionError``)."""
        await self.open()
        (future,) = self.send([json.dumps(message, separators=(",", ":")).encode() + b"\n"])
        answer: dict[str, Any] = json.loads(await future)
        return answer

    async def open(self) -> None:
        """Connect if not connected (``OSError``/``TimeoutError`` when the peer is not there)."""
        if self._writer is not None:
            return
        if self.suspect:
            raise ConnectionError(f"{self.host}:{self.port} stopped answering; probing it")
        if asyncio.get_running_loop().time() < self._down_until_s:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port} (just failed)")
        failed_before = self._failed_connects
        async with self._opening:
            if self._writer is not None:
                return
            if self._failed_connects != failed_before:
                # A connect failed while this call waited: fail at once, not one timeout
                # per waiter in a row (a peer cut off answers no SYN at all).
                raise ConnectionError(f"cannot connect to {self.host}:{self.port} now")
            try:
                reader, writer = await asyncio.wait_for(self._connect(), self.timeout_s)
            except TimeoutError:
                # No answer to the SYN (a peer cut off): fail at once for a while rather than
                # make every next request wait out a connect of its own (a router would spend
                # a timeout on each batch). With a probe, until the peer answers it; without,
                # for one timeout.
                self._failed_connects += 1
                if self.probe is not None:
                    if not self.suspect:
                        self._prober = asyncio.create_task(self._probe_until_answered())
                else:
                    self._down_until_s = asyncio.get_running_loop().time() + self.timeout_s
                raise
            except OSError:  # after TimeoutError, which is one too
                self._failed_connects += 1  # refused, unreachable: it failed fast, try again
                raise
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader, writer))

    def send(self, lines: Sequence[bytes]) -> list[AnswerFuture]:
        """Write newline-terminated lines at once; one future per line for its answer line.

        The link must be open (``await open()`` first); a closed link fails them at once.
        """
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in lines]
        for future in futures:  # a caller that gave up must not leave an unread error
            future.add_done_callback(_retrieve)
        if self._writer is None:
            for future in futures:
                future.set_exception(ConnectionError(f"not connected to {self.host}:{self.port}"))
            return futures
        deadline = loop.time() + self.timeout_s
        self._waiting.extend((f, deadline) for f in futures)
        self._writer.write(b"".join(lines))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_oldest)
        return futures

    def _check_oldest(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        oldest, deadline = self._waiting[0]
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._check_oldest)
            return
        # Answers are in order: a lost one spoils the connection for all behind it.
        if self.probe is not None and not self.suspect:
            self._prober = asyncio.create_task(self._probe_until_answered())
        self._waiting.popleft()
        if not oldest.done():
            oldest.set_exception(
                TimeoutError(f"no answer from {self.host}:{self.port} in {self.timeout_s} s")
            )
        self._broken()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        try:
            while chunk := await reader.read(256 * 1024):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not self._waiting or self._writer is not writer:
                        break  # a late answer on a spoiled connection answers nobody
                    future, _ = self._waiting.popleft()
                    if not future.done():
                        future.set_result(line)
        except ConnectionError:
            pass
        if self._writer is writer:
            self._broken()

    def _broken(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"connection to {self.host}:{self.port} lost"))

    async def _probe_until_answered(self) -> None:
        assert self.probe is not None
        while True:
            await asyncio.sleep(self.probe_interval_s)
            writer = None
            try:
                reader, writer = await asyncio.wait_for(self._connect(), self.timeout_s)
                writer.write(self.probe)
                answer = await asyncio.wait_for(reader.readline(), self.timeout_s)
                if b"pong" in answer:
                    return
            except (OSError, TimeoutError, ValueError):  # ValueError: a line over the limit
                pass
            finally:
                if writer is not None:
                    writer.close()

    def _connect(self) -> Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        if self.tls is None:
            return asyncio.open_connection(self.host, self.port)
        return asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=self.host
        )

    async def close(self) -> None:
        self._broken()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._prober is not None:
            self._prober.cancel()


def _retrieve(future: AnswerFuture) -> None:
    if not future.cancelled():
        future.exception()
