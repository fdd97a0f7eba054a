"""The backbone router of one site: takes messages from producers and delivers each to the
module of its kind at the site that owns its shard (possibly the other site).

Producers speak the module protocol (``{"env": ...}`` lines, answers in order). Ownership
comes from the store's ownership documents, read every ``refresh_interval_s``; the module
at the owner's site decides (it holds the grant), so a router with an old map causes a
refusal and a retry, never a wrong write. Answers carry ``site`` (who applied or refused
it; the module writes it).

The router reads only what it routes by (``kind`` and ``shard``) and forwards each line
unchanged, batched per module: whatever arrived in one read goes out in one write per
module, and the answers are written back in one write. The module checks the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from failover.core.fencing import Ownership
from failover.workload.envelope import MODULE_OF_KIND, SCHEMA, Envelope
from failover.workload.line_server import LineServer
from failover.workload.linkpool import AnswerFuture, Link
from failover.workload.module import MAX_LINE_BYTES

Owners = Callable[[], Mapping[str, Ownership]]
PING = b'{"ping":true}\n'  # a module answers {"pong": true} while it serves
Pending = bytes | tuple[AnswerFuture, str]  # an answer decided here, or (module's, site)


def _line(answer: Mapping[str, Any]) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


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
            (s, c): Link(host, port, timeout_s=timeout_s, probe=PING)
            for s, by_component in modules.items()
            for c, (host, port) in by_component.items()
        }
        self.routed = 0
        super().__init__()

    async def close(self) -> None:
        await super().close()
        for link in self._links.values():
            await link.close()

    def target(self, line: bytes) -> tuple[str, str] | bytes:
        """Where one request line goes: (owner site, component), or the refusal to answer."""
        try:
            frame = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            frame = None
        raw = frame.get("env") if isinstance(frame, dict) else None
        if not isinstance(raw, dict):
            raw = {}
        kind, shard = raw.get("kind"), raw.get("shard")
        component = MODULE_OF_KIND.get(kind) if isinstance(kind, str) else None
        if component is None or type(shard) is not int or raw.get("schema") != SCHEMA:
            try:  # not routable: the envelope's own check names what is wrong
                Envelope.from_dict(raw)
                detail = "the envelope cannot be routed"
            except ValueError as err:
                detail = str(err)
            msg_id = raw.get("id") if isinstance(raw.get("id"), str) else ""
            return _line({"id": msg_id, "ok": False, "reason": "malformed", "detail": detail})
        ownership = self._owners().get(component)
        owner = None
        if ownership is not None and 0 <= shard < len(ownership.shards):
            owner = ownership.shards[shard].owner
        if owner is None or (owner, component) not in self._links:
            return _line({"id": raw.get("id"), "ok": False, "reason": "no-owner"})
        return owner, component

    async def forward(self, lines: list[bytes]) -> list[Pending]:
        """Each line to its module, one write per module; in request order, the answer
        decided here or the future of the module's answer with the owner's site."""
        out: list[Pending] = []
        batches: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        for line in lines:
            where = self.target(line)
            if isinstance(where, bytes):
                out.append(where)
            else:
                batches.setdefault(where, []).append((len(out), line))
                out.append(b"")
        for (site, component), batch in batches.items():
            link = self._links[(site, component)]
            try:
                await link.open()
            except (TimeoutError, OSError):
                for position, line in batch:
                    out[position] = _unreachable(line, site)
                continue
            futures = link.send([line + b"\n" for _, line in batch])
            for (position, _), future in zip(batch, futures, strict=True):
                out[position] = (future, site)
            self.routed += len(batch)
        return out

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        answers: asyncio.Queue[list[tuple[bytes, Pending]] | None] = asyncio.Queue()

        async def reply_in_order() -> None:
            while (batch := await answers.get()) is not None:
                out = []
                for line, pending in batch:
                    if isinstance(pending, bytes):
                        out.append(pending)
                        continue
                    future, site = pending
                    try:
                        out.append(await future + b"\n")
                    except (TimeoutError, ConnectionError):
                        out.append(_unreachable(line, site))
                writer.write(b"".join(out))
                await writer.drain()

        replier = asyncio.create_task(reply_in_order())
        pending = b""
        try:
            while chunk := await reader.read(256 * 1024):
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE_BYTES:
                    break  # no newline in sight: not our protocol, drop the connection
                lines = [line for line in lines if line.strip()]
                if lines:
                    forwarded = await self.forward(lines)
                    await answers.put(list(zip(lines, forwarded, strict=True)))
        except ConnectionError:
            pass
        finally:
            await answers.put(None)
            with contextlib.suppress(ConnectionError):
                await replier
            writer.close()


def _unreachable(line: bytes, site: str) -> bytes:
    try:
        msg_id = json.loads(line)["env"]["id"]
    except (ValueError, KeyError, TypeError):
        msg_id = ""
    return _line({"id": msg_id, "ok": False, "reason": "module-unreachable", "site": site})
