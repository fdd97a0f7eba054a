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

Telemetry: ``bfm_messages_total{component="router", kind, outcome}`` with outcome
``forwarded`` (the module answered, whatever it said), ``no-owner``, ``malformed``,
``module-unreachable`` or ``overloaded`` (below), tallied per read. A message whose
``traceparent`` is sampled gets a span ``bfm.route`` (CONSUMER: the router consumes the
producer's message, as the module does; the line goes on unchanged, so both are children
of the producer's span), from the routing decision to the answer; unsampled messages cost
one string test.

Health (``health``, reported with the module's on the backbone process's pong): ``handled``
counts the messages a module answered (delivered onward, whatever the module said: its
refusals are its own to count), with their latency on the injected monotonic clock from
the read that brought them to the moment their read's last answer is in (before the write
back, which waits on the client). The router refuses nothing through its own fault
(no-owner, malformed and module-unreachable are the map, the sender and the module), so
its ``errors`` stay 0. A module's refusal, ``version-error`` included, goes back unchanged:
the producer retries it like any other.

Bounded under a flood (SECURITY.md, "Bounded resources"): at most ``max_in_flight``
messages of the whole process wait for a module's answer; a routable message beyond that
is answered ``overloaded`` at once (outcome ``overloaded``; the producer retries it later),
so an accepted message is never dropped and a burst costs one cheap refusal per message
over the bound. Each connection holds at most ``MAX_READS_QUEUED`` reads whose answers are
not written back yet: a client that does not read its answers is not read either (TCP
backpressure on that connection only). Beyond ``max_clients`` connections a new one is
closed at once (the producer sees ``router-unreachable`` and retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from bfm_observe.propagation import context_of
from bfm_observe.ratelog import Summarized
from failover.core.fencing import Ownership
from failover.core.versions import DEFAULT_VERSION, ComponentHealth, check_version
from failover.workload.envelope import MODULE_OF_KIND, SCHEMA, Envelope
from failover.workload.line_server import LineServer
from failover.workload.linkpool import AnswerFuture, Link
from failover.workload.message_metrics import (
    HealthCounters,
    default_tracer,
    is_sampled,
    messages,
)
from failover.workload.module import MAX_LINE_BYTES

Owners = Callable[[], Mapping[str, Ownership]]
PING = b'{"ping":true}\n'  # a module answers {"pong": true, "health": ...} while it serves
COMPONENT = "router"
"""The ``component`` label of the router's metrics (it shares the backbone's process)."""
MAX_IN_FLIGHT = 1000
"""Messages of the process forwarded and not yet answered by their module. A module
commits a read's worth (hundreds) at a time, so this keeps every module busy; at 150
msg/s a router has a handful in flight. Lines are at most ``MAX_LINE_BYTES``."""
MAX_READS_QUEUED = 4
"""Reads of one connection (up to ``READ_BYTES`` each) whose answers wait to be written."""
MAX_CLIENTS = 256
"""Producer connections served at once; devices share a few connections per gateway."""
READ_BYTES = 256 * 1024
_log = logging.getLogger("bfm.router")


Forwarded = tuple[AnswerFuture, str, str, Span | None]
"""A line on its way to a module: the future of its answer, the owner's site, the kind
(the metric's label) and its span (sampled messages only)."""
Pending = bytes | Forwarded  # an answer decided here, or the module's to come
Route = tuple[tuple[str, str] | bytes, str, str, dict[str, Any]]
"""Where a line goes ((owner site, component), or the refusal decided here), its kind
label (or "unknown"), the refusal reason ("" when it goes on) and the envelope."""


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
        tracer: Tracer | None = None,
        version: str = DEFAULT_VERSION,
        monotonic: Callable[[], float] = time.monotonic,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_clients: int = MAX_CLIENTS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``modules``: site -> component -> (host, port) of that module. ``tracer``:
        default BFM's. ``version``: what this instance runs (ValueError when invalid).
        ``max_in_flight``, ``max_clients``: the bounds (module docstring). ``tls``: the
        client side of TLS to the modules (``failover.adapters.tls``)."""
        self.site = site
        self.version = check_version(version)
        self.health = HealthCounters()
        self._monotonic = monotonic
        self._tracer = default_tracer(tracer)
        self._tally = messages(site, COMPONENT)
        self._owners = owners
        self._malformed = Summarized(_log)  # counted in bfm_messages_total; logged summed
        self._links = {
            (s, c): Link(host, port, timeout_s=timeout_s, probe=PING, tls=tls)
            for s, by_component in modules.items()
            for c, (host, port) in by_component.items()
        }
        self.routed = 0
        self.max_in_flight, self.max_clients = max_in_flight, max_clients
        self.in_flight = 0  # forwarded, the module's answer not in yet
        self.peak_in_flight = 0
        self.refused_clients = 0
        super().__init__()

    def health_report(self) -> ComponentHealth:
        return self.health.report(self.version)

    async def close(self) -> None:
        await super().close()
        for link in self._links.values():
            await link.close()

    def target(self, line: bytes) -> tuple[str, str] | bytes:
        """Where one request line goes: (owner site, component), or the refusal to answer."""
        return self._route(line)[0]

    def _route(self, line: bytes) -> Route:
        try:
            frame = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            frame = None
        raw = frame.get("env") if isinstance(frame, dict) else None
        if not isinstance(raw, dict):
            raw = {}
        kind, shard = raw.get("kind"), raw.get("shard")
        kind = kind if isinstance(kind, str) else ""
        component = MODULE_OF_KIND.get(kind)
        if component is None or type(shard) is not int or raw.get("schema") != SCHEMA:
            try:  # not routable: the envelope's own check names what is wrong
                Envelope.from_dict(raw)
                detail = "the envelope cannot be routed"
            except ValueError as err:
                detail = str(err)
            msg_id = raw.get("id") if isinstance(raw.get("id"), str) else ""
            self._malformed.note(
                "malformed",
                f"malformed message(s) refused by the router at {self.site}",
                f"{msg_id or '(no id)'}: {detail}",
                event="malformed_message",
            )
            refusal = _line({"id": msg_id, "ok": False, "reason": "malformed", "detail": detail})
            return refusal, kind if component is not None else "unknown", "malformed", raw
        ownership = self._owners().get(component)
        owner = None
        if ownership is not None and 0 <= shard < len(ownership.shards):
            owner = ownership.shards[shard].owner
        if owner is None or (owner, component) not in self._links:
            refusal = _line({"id": raw.get("id"), "ok": False, "reason": "no-owner"})
            return refusal, kind, "no-owner", raw
        return (owner, component), kind, "", raw

    async def forward(self, lines: list[bytes]) -> list[Pending]:
        """Each line to its module, one write per module; in request order, the answer
        decided here or the module's answer to come (``Forwarded``)."""
        out: list[Pending] = []
        batches: dict[tuple[str, str], list[tuple[int, bytes, str, Span | None]]] = {}
        tally = self._tally
        room = self.max_in_flight - self.in_flight
        for line in lines:
            route = self._route(line)
            where, kind, outcome, raw = route
            traceparent = raw.get("traceparent")
            if not isinstance(traceparent, str) or not is_sampled(traceparent):
                traceparent = ""  # the fast path: no span for an unsampled message
            if isinstance(where, bytes):
                out.append(where)
                tally.add(kind, outcome)
                if traceparent and outcome == "no-owner":
                    _end(self._start_span(route, traceparent), "no-owner")
            elif room <= 0:  # over the bound: refused now, the producer retries it later
                refusal = {"id": raw.get("id"), "ok": False, "reason": "overloaded"}
                out.append(_line({**refusal, "site": self.site}))
                tally.add(kind, "overloaded")
                if traceparent:
                    _end(self._start_span(route, traceparent), "overloaded")
            else:
                room -= 1
                span = self._start_span(route, traceparent) if traceparent else None
                batches.setdefault(where, []).append((len(out), line, kind, span))
                out.append(b"")
        for (site, component), batch in batches.items():
            link = self._links[(site, component)]
            try:
                await link.open()
            except (TimeoutError, OSError):
                for position, line, kind, span in batch:
                    out[position] = _unreachable(line, site)
                    tally.add(kind, "module-unreachable")
                    if span is not None:
                        _end(span, "module-unreachable")
                continue
            futures = link.send([line + b"\n" for _, line, _, _ in batch])
            for (position, _, kind, span), future in zip(batch, futures, strict=True):
                out[position] = (future, site, kind, span)
                future.add_done_callback(self._answered)
            self.routed += len(batch)
            self.in_flight += len(batch)
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        tally.flush()
        return out

    async def _answers_of(self, received_s: float, batch: list[tuple[bytes, Pending]]) -> bytes:
        """The answers to one read, in order, once every module answered (or timed out)."""
        out = []
        forwarded: dict[str, int] = {}  # kind -> answered by its module
        for line, pending in batch:
            if isinstance(pending, bytes):
                out.append(pending)
                continue
            future, site, kind, span = pending
            try:
                answer = await future
            except (TimeoutError, ConnectionError):
                out.append(_unreachable(line, site))
                self._tally.add(kind, "module-unreachable")
                if span is not None:
                    _end(span, "module-unreachable")
                continue
            out.append(answer + b"\n")
            forwarded[kind] = forwarded.get(kind, 0) + 1
            if span is not None:
                _end(span, _outcome_of(answer))
        for kind, n in forwarded.items():
            self._tally.add(kind, "forwarded", n=n)
        self._tally.flush()
        if forwarded:
            latency_s = self._monotonic() - received_s
            self.health.handled_many(sum(forwarded.values()), latency_s)
        return b"".join(out)

    def _too_many_clients(self) -> bool:
        """Over ``max_clients`` (this connection counted): refuse it, logged sparingly."""
        if len(self._clients) <= self.max_clients:
            return False
        self.refused_clients += 1
        if self.refused_clients & (self.refused_clients - 1) == 0:  # 1, 2, 4, ...: few lines
            _log.warning(
                "router at site %s refused a connection: %d served at once is its bound "
                "(%d refused so far)",
                self.site,
                self.max_clients,
                self.refused_clients,
                extra={"event": "connection_refused", "refused": self.refused_clients},
            )
        return True

    def _answered(self, _: AnswerFuture) -> None:
        self.in_flight -= 1

    def _start_span(self, route: Route, traceparent: str) -> Span:
        where, kind, _, raw = route
        attributes: dict[str, str | int] = {"bfm.kind": kind, "bfm.router_site": self.site}
        if type(raw.get("shard")) is int:
            attributes["bfm.shard"] = raw["shard"]
        if isinstance(raw.get("id"), str):
            attributes["messaging.message.id"] = raw["id"]
        if not isinstance(where, bytes):
            attributes["bfm.owner_site"] = where[0]
        return self._tracer.start_span(
            "bfm.route",
            context=context_of(traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._too_many_clients():
            writer.close()
            return
        # per read: when it was read (the health's latency) and its lines' answers to be;
        # bounded: when the client does not read its answers, its requests are not read
        answers: asyncio.Queue[tuple[float, list[tuple[bytes, Pending]]] | None]
        answers = asyncio.Queue(maxsize=MAX_READS_QUEUED)

        async def reply_in_order() -> None:
            gone = False  # the client is gone: still take every read off the bounded queue
            while (item := await answers.get()) is not None:
                out = await self._answers_of(*item)
                if gone:
                    continue
                try:
                    writer.write(out)
                    await writer.drain()
                except ConnectionError:
                    gone = True

        replier = asyncio.create_task(reply_in_order())
        pending = b""
        try:
            while chunk := await reader.read(READ_BYTES):
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE_BYTES:
                    break  # no newline in sight: not our protocol, drop the connection
                lines = [line for line in lines if line.strip()]
                if lines:
                    received_s = self._monotonic()
                    forwarded = await self.forward(lines)
                    await answers.put((received_s, list(zip(lines, forwarded, strict=True))))
        except ConnectionError:
            pass
        finally:
            await answers.put(None)
            with contextlib.suppress(ConnectionError):
                await replier
            writer.close()


def _outcome_of(answer: bytes) -> str:
    """``forwarded`` when the module applied it, else the module's refusal reason."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        return "bad-answer"
    if not isinstance(parsed, dict):
        return "bad-answer"
    if parsed.get("ok") is True:
        return "forwarded"
    return str(parsed.get("reason", "refused"))


def _end(span: Span, outcome: str) -> None:
    """End a route span once its answer is known; a refusal is an error."""
    if span.is_recording():
        span.set_attribute("bfm.outcome", outcome)
        if outcome != "forwarded":
            span.set_status(StatusCode.ERROR, outcome)
    span.end()


def _unreachable(line: bytes, site: str) -> bytes:
    try:
        msg_id = json.loads(line)["env"]["id"]
    except (ValueError, KeyError, TypeError):
        msg_id = ""
    return _line({"id": msg_id, "ok": False, "reason": "module-unreachable", "site": site})
