"""The backbone router of one site: takes messages from producers and delivers each to the
module of its kind at the site that owns its shard (possibly the other site).

Producers speak the module protocol (``{"env": ...}`` lines, answers in order). Ownership
comes from the store's ownership documents, read every ``refresh_interval_s``; the module
at the owner's site decides (it holds the grant), so a router with an old map causes a
refusal and a retry, never a wrong write. Answers carry ``site`` (who applied it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from failover.core.fencing import Ownership
from failover.workload.envelope import Envelope
from failover.workload.line_server import LineServer
from failover.workload.linkpool import Link

Owners = Callable[[], Mapping[str, Ownership]]


class Router(LineServer):
    def __init__(
        self,
        site: str,
        *,
        owners: Owners,
        modules: Mapping[str, Mapping[str, tuple[str, int]]],
        timeout_s: float = 0.5,
    ) -> None:
        """``modules``: site -> component -> (host, port) of that module."""
        self.site = site
        self._owners = owners
        self._links = {
            (s, c): Link(host, port, timeout_s=timeout_s)
            for s, by_component in modules.items()
            for c, (host, port) in by_component.items()
        }
        self.routed = 0
        super().__init__()

    async def close(self) -> None:
        await super().close()
        for link in self._links.values():
            await link.close()

    async def route(self, raw: Any) -> dict[str, Any]:
        try:
            env = Envelope.from_dict(raw if isinstance(raw, dict) else {})
        except ValueError as err:
            msg_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
            return {"id": msg_id, "ok": False, "reason": "malformed", "detail": str(err)}
        ownership = self._owners().get(env.component)
        owner = None
        if ownership is not None and env.shard < len(ownership.shards):
            owner = ownership.shards[env.shard].owner
        link = self._links.get((owner, env.component)) if owner else None
        if link is None:
            return {"id": env.id, "ok": False, "reason": "no-owner"}
        try:
            answer = await link.request({"env": json.loads(env.to_json())})
        except (TimeoutError, ConnectionError, OSError):
            return {"id": env.id, "ok": False, "reason": "module-unreachable", "site": owner}
        self.routed += 1
        return {**answer, "site": owner}

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        answers: asyncio.Queue[asyncio.Task[dict[str, Any]] | None] = asyncio.Queue()

        async def reply_in_order() -> None:
            while (task := await answers.get()) is not None:
                writer.write(json.dumps(await task).encode() + b"\n")
                await writer.drain()

        replier = asyncio.create_task(reply_in_order())
        try:
            while line := await reader.readline():
                try:
                    frame = json.loads(line)
                    raw = frame.get("env") if isinstance(frame, dict) else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raw = None
                await answers.put(asyncio.create_task(self.route(raw)))
        except (ConnectionError, ValueError):
            pass
        finally:
            await answers.put(None)
            with contextlib.suppress(ConnectionError):
                await replier
            writer.close()
