"""The TCP server shape shared by modules and routers: newline-delimited JSON, one task per
connection, and a quiet shutdown that ends open connections without stray tracebacks."""

from __future__ import annotations

import asyncio
import ssl


class LineServer:
    """Subclasses implement ``_serve_client``; ``start``/``close`` manage the rest."""

    def __init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(
        self, host: str, port: int, *, tls: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Listen on ``host:port`` (TLS with ``tls``: ``failover.adapters.tls``)."""
        self._server = await asyncio.start_server(self._client, host, port, ssl=tls)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):  # end open connections quietly, not by cancel
                task.cancel()
            if self._clients:
                await asyncio.wait(self._clients, timeout=2.0)
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)
        try:
            await self._serve_client(reader, writer)
        except asyncio.CancelledError:
            writer.close()  # shutting down: a quiet end, the peer sees the connection close

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError
