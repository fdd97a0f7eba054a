"""A module service (EAP, EEP, AAM, MSM, GSM): the sink that checks, records and acks.

Newline-delimited JSON over TCP, pipelined, one answer per message in order::

    -> {"env": {...envelope...}, "valid_until_mono_s": 12345.6}
    <- {"id": "m1", "ok": true}          (applied, or applied before: retries are safe)
    <- {"id": "m1", "ok": false, "reason": "stale-epoch"}

A message is refused when its router's grant has run out (``lease-expired``: the router
was paused or cut off past its deadline, same host clock), when its epoch is below the
highest this module knows for the shard (``stale-epoch``: a newer owner exists), when it
is not for this module (``wrong-module``) or not a valid envelope (``malformed``). Work
passes into the ledger in batches (group commit) and is acknowledged only after that.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from failover.core.fencing import EpochFence
from failover.workload.envelope import Envelope
from failover.workload.ledger import Ledger, LedgerError

MAX_LINE_BYTES = 70 * 1024


@dataclass
class ModuleStats:
    applied: int = 0
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class ModuleService:
    """One module instance at one site."""

    def __init__(
        self,
        component: str,
        *,
        ledger: Ledger,
        fence: EpochFence,
        monotonic: Callable[[], float],
        wall: Callable[[], float],
        check_deadline: bool = True,
    ) -> None:
        self.component = component
        self.ledger, self.fence = ledger, fence
        self._monotonic, self._wall = monotonic, wall
        self.check_deadline = check_deadline
        self.stats = ModuleStats()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._client, host, port)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def check(self, frame: Any) -> tuple[Envelope | None, str | None, str]:
        """(envelope, refusal reason or None, id) for one decoded request line."""
        if not isinstance(frame, dict):
            return None, "malformed", ""
        raw = frame.get("env")
        msg_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
        try:
            env = Envelope.from_dict(raw if isinstance(raw, dict) else {})
            deadline = float(frame["valid_until_mono_s"])
        except (ValueError, KeyError, TypeError):
            return None, "malformed", msg_id
        if env.component != self.component:
            return env, "wrong-module", env.id
        if self.check_deadline and self._monotonic() > deadline:
            return env, "lease-expired", env.id
        if not self.fence.admit(env.component, env.shard, env.epoch):
            return env, "stale-epoch", env.id
        return env, None, env.id

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        try:
            while True:
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    return
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE_BYTES:
                    return  # no newline in sight: not our protocol, drop the connection
                lines = [line for line in lines if line.strip()]
                if lines:
                    writer.write(await self._answer(lines))
                    await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    async def _answer(self, lines: list[bytes]) -> bytes:
        answers: list[dict[str, Any]] = []
        batch: list[tuple[int, Envelope]] = []
        for line in lines:
            try:
                frame = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                frame = None
            env, reason, msg_id = self.check(frame)
            if reason is not None or env is None:
                self.stats.refuse(reason or "malformed")
                answers.append({"id": msg_id, "ok": False, "reason": reason or "malformed"})
            else:
                batch.append((len(answers), env))
                answers.append({"id": env.id, "ok": True})
        if batch:
            try:
                fresh = await asyncio.to_thread(
                    self.ledger.apply, [env for _, env in batch], applied_at=self._wall()
                )
            except LedgerError:
                for position, _ in batch:
                    answers[position] = {**answers[position], "ok": False, "reason": "ledger-error"}
                self.stats.refuse("ledger-error")
            else:
                self.stats.applied += sum(fresh)
                self.stats.duplicates += len(fresh) - sum(fresh)
        return b"".join(json.dumps(a).encode() + b"\n" for a in answers)
