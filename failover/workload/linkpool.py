"""Pipelined request/answer connections (newline-delimited JSON) to one peer each.

Answers come back in request order, so each connection keeps a FIFO of waiting futures.
A broken connection fails everything waiting on it with ``ConnectionError`` and is opened
again on the next request.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any


class Link:
    """One pipelined connection to ``(host, port)``."""

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and wait for its answer (``TimeoutError``/``ConnectionError``)."""
        await self._open()
        assert self._writer is not None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            self._broken()  # answers are in order: a lost one spoils the connection
            if future.done() and not future.cancelled():
                future.exception()  # retrieved here: nobody else waits for it any more
            raise

    async def _open(self) -> None:
        if self._writer is not None:
            return
        async with self._opening:
            if self._writer is not None:
                return
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout_s
            )
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if self._waiting:
                    future = self._waiting.popleft()
                    if not future.done():
                        future.set_result(json.loads(line))
        except (ConnectionError, ValueError):
            pass
        if self._writer is writer:
            self._broken()

    def _broken(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"connection to {self.host}:{self.port} lost"))

    async def close(self) -> None:
        self._broken()
        if self._reader_task is not None:
            self._reader_task.cancel()
