"""A module service (EAP, EEP, AAM, MSM, GSM): the sink that admits, records and acks.

Newline-delimited JSON over TCP, pipelined, one answer per message in order::

    -> {"env": {...envelope...}}
    <- {"id": "m1", "ok": true, "epoch": 12}     (applied, or applied before: retries are safe)
    <- {"id": "m1", "ok": false, "reason": "not-owner"}
    -> {"ping": true}                               (the site agent's liveness probe)
    <- {"pong": true, "health": {"version": "1.0.0", "handled": 120, "errors": 0,
                                 "latency_counts": [118, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]}}

The module is the gate, on the owner's host: it admits a message only under its site's
published grant for the shard (``failover.runtime.grants``: epoch, valid until a deadline
on this host's monotonic clock), stamps that epoch, and refuses it when the site holds no
live grant (``not-owner``), when a newer epoch is known for the shard (``stale-epoch``),
when the grant ran out or was withdrawn before the ledger commit (``lease-expired``: the
process was paused in between, or the agent drained or released the shard meanwhile),
when it is for another module (``wrong-module``) or not a valid envelope (``malformed``).
A module whose version fails after readiness (``fails_after_ready``: a test build) answers
pings like any other but refuses every valid envelope (``version-error``).
Work passes into the ledger in batches (group commit) and is acknowledged only after the
commit.

Admission may use a cached view of the grants (``grants``, refreshed after a batch when a
few hundred milliseconds old: no file read per message); a shard the cache does not grant
is looked up fresh (``grants_now``) before it is refused. The fence is the check inside
the ledger transaction, read fresh: every grant a batch was admitted under must still hold,
unexpired, at the commit. With fencing switched off (a test build) that check is skipped
and the cached view decides alone, which is how a system without fencing behaves: a
process resumed after a pause writes what its old view admits.

Telemetry, per batch: ``bfm_messages_total{kind, outcome}`` (applied, duplicate or the
refusal reason), ``bfm_message_duration_seconds{kind}`` from admission to the commit,
``bfm_stale_epoch_refusals_total{reason}`` for stale-epoch, lease-expired and not-owner.
A message whose ``traceparent`` is sampled gets a span ``bfm.apply`` (CONSUMER, child of
the producer's span) from admission to the commit, linked to the controller decision
behind the grant it was admitted under (``decision_of``).

Health (``failover.core.versions.ComponentHealth``, answered with each pong for the whole
process: ``health_parts`` holds the router's counters too in a backbone process):
``handled`` counts messages acknowledged after the commit (applied or duplicate),
``errors`` the refusals that are the module's own fault (``OWN_FAULT_REASONS``:
version-error, ledger-error; not the ownership and fencing refusals). Latency runs on the
injected monotonic clock from when this process read the message off its connection to
the commit of its batch. Not from the envelope's ``sent_at``: that is the producer's wall
clock at the *first* send, so it would charge this module with the producer's retry delays
(a message refused elsewhere and moved here) and with any clock skew between hosts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Link, Span, SpanKind, StatusCode, Tracer

from bfm_observe.propagation import context_of, link_to
from failover import telemetry
from failover.core.fencing import EpochFence
from failover.core.versions import (
    DEFAULT_VERSION,
    ComponentHealth,
    check_version,
    fails_after_ready,
)
from failover.workload.envelope import Envelope
from failover.workload.ledger import GrantExpired, Ledger, LedgerError
from failover.workload.line_server import LineServer
from failover.workload.message_metrics import (
    OWN_FAULT_REASONS,
    STALE_REASONS,
    HealthCounters,
    Latency,
    Tally,
    default_tracer,
    exemplar_of,
    is_sampled,
    messages,
    summed_health,
)

MAX_LINE_BYTES = 70 * 1024


@dataclass
class ModuleStats:
    applied: int = 0
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class ModuleService(LineServer):
    """One module instance at one site."""

    def __init__(
        self,
        component: str,
        *,
        ledger: Ledger,
        fence: EpochFence,
        grants: Callable[[str, int], tuple[int, float] | None],
        monotonic: Callable[[], float],
        grants_now: Callable[[str, int], tuple[int, float] | None] | None = None,
        after_batch: Callable[[], None] | None = None,
        wall: Callable[[], float],
        fencing_enabled: bool = True,
        decision_of: Callable[[str], str] | None = None,
        tracer: Tracer | None = None,
        version: str = DEFAULT_VERSION,
    ) -> None:
        """``decision_of(component)``: the traceparent of the controller decision behind
        the component's current ownership ("" when unknown), for the span link of admitted
        work. ``tracer``: default BFM's. ``version``: what this instance runs (reported
        with its health; ValueError when it is not a valid version)."""
        self.component = component
        self.version = check_version(version)
        self._fails_after_ready = fails_after_ready(version)
        self.health = HealthCounters()
        self.health_parts: list[HealthCounters] = [self.health]
        """Counters reported for this process on a ping (add the router's in a backbone)."""
        self.decision_of = decision_of
        self._tracer = default_tracer(tracer)
        self.ledger, self.fence, self.grants = ledger, fence, grants
        self.grants_now = grants_now or grants
        self.after_batch = after_batch  # e.g. refresh the cached view of the grants
        self._monotonic, self._wall = monotonic, wall
        self.fencing_enabled = fencing_enabled
        self.stats = ModuleStats()
        self.site = ledger.site
        self._tally = messages(self.site, component)
        self._stale = Tally(telemetry.STALE_EPOCH_REFUSALS, self.site, component)
        self._latency = Latency(self.site, component)
        super().__init__()

    def process_health(self) -> ComponentHealth:
        """What this process reports of itself: its version and its parts' counters."""
        return summed_health(self.version, self.health_parts)

    def check(self, frame: Any) -> tuple[Envelope | None, str | None, str, float]:
        """(stamped envelope, refusal reason or None, id, grant deadline) for one request."""
        if not isinstance(frame, dict):
            return None, "malformed", "", 0.0
        raw = frame.get("env")
        msg_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
        try:
            env = Envelope.from_dict(raw if isinstance(raw, dict) else {})
        except ValueError:
            return None, "malformed", msg_id, 0.0
        if self._fails_after_ready:
            return env, "version-error", env.id, 0.0
        if env.component != self.component:
            return env, "wrong-module", env.id, 0.0
        # The cached view may admit (the commit checks it fresh); only a fresh view refuses.
        grant = self.grants(env.component, env.shard) or self.grants_now(env.component, env.shard)
        if grant is None:
            return env, "not-owner", env.id, 0.0
        epoch, deadline_s = grant
        if not self.fence.admit(env.component, env.shard, epoch):
            return env, "stale-epoch", env.id, 0.0
        return env.stamped(epoch), None, env.id, deadline_s

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
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
        admitted_s = time.perf_counter()
        received_s = self._monotonic()  # the health's latency: on the injected clock
        answers: list[dict[str, Any]] = []
        batch: list[tuple[int, Envelope]] = []
        spans: dict[int, Span] = {}  # batch index -> span of a sampled message
        decision: str | None = None  # asked once per batch, when a sampled message needs it
        deadline_s = float("inf")
        for line in lines:
            try:
                frame = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                frame = None
            if isinstance(frame, dict) and frame.get("ping") is True:
                # the site agent's liveness probe; the router's circuit breaker
                answers.append({"pong": True, "health": self.process_health().to_doc()})
                continue
            env, reason, msg_id, until_s = self.check(frame)
            if reason is not None or env is None:
                reason = reason or "malformed"
                self.stats.refuse(reason)
                self._count_refusal(env.kind if env is not None else "unknown", reason)
                if env is not None and is_sampled(env.traceparent):
                    _end(self._start_span(env, ""), reason)  # refused at admission
                answers.append({"id": msg_id, "ok": False, "reason": reason, "site": self.site})
            else:
                if is_sampled(env.traceparent):
                    if decision is None:
                        decision = self.decision_of(env.component) if self.decision_of else ""
                    spans[len(batch)] = self._start_span(env, decision)
                batch.append((len(answers), env))
                answers.append({"id": env.id, "ok": True, "epoch": env.epoch, "site": self.site})
                deadline_s = min(deadline_s, until_s)
        if batch:
            outcomes = await self._record(batch, answers, deadline_s)
            handled = self._recorded(batch, outcomes, spans, time.perf_counter() - admitted_s)
            self.health.handled_many(handled, self._monotonic() - received_s)
        self._tally.flush()
        self._stale.flush()
        if self.after_batch is not None:
            self.after_batch()
        return b"".join(json.dumps(a, separators=(",", ":")).encode() + b"\n" for a in answers)

    def _count_refusal(self, kind: str, reason: str) -> None:
        """Tallied; added to the counters once after the batch."""
        self._tally.add(kind, reason)
        if reason in STALE_REASONS:
            self._stale.add(reason)
        elif reason in OWN_FAULT_REASONS:
            self.health.errors += 1

    def _start_span(self, env: Envelope, decision: str) -> Span:
        links: list[Link] = []
        if decision and env.epoch:
            about: dict[str, str | int] = {"bfm.link": "granting-decision", "bfm.epoch": env.epoch}
            link = link_to(decision, **about)
            if link is not None:
                links.append(link)
        attributes: dict[str, str | int] = {
            "bfm.kind": env.kind,
            "bfm.shard": env.shard,
            "messaging.message.id": env.id,
        }
        if env.epoch:
            attributes["bfm.epoch"] = env.epoch
        return self._tracer.start_span(
            "bfm.apply",
            context=context_of(env.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )

    def _recorded(
        self,
        batch: list[tuple[int, Envelope]],
        outcomes: list[str],
        spans: dict[int, Span],
        elapsed_s: float,
    ) -> int:
        """Metrics and spans of a batch once the ledger decided; the number acknowledged.
        Admitted work is all of this module's kind (each kind has its module), committed at
        one moment."""
        kind = batch[0][1].kind
        applied, duplicates = outcomes.count("applied"), outcomes.count("duplicate")
        if applied:
            self._tally.add(kind, "applied", n=applied)
        if duplicates:
            self._tally.add(kind, "duplicate", n=duplicates)
        if applied + duplicates < len(outcomes):
            for outcome in outcomes:
                if outcome not in ("applied", "duplicate"):
                    self._count_refusal(kind, outcome)
        exemplar = None
        for index, span in spans.items():
            if exemplar is None and outcomes[index] in ("applied", "duplicate"):
                exemplar = exemplar_of(span)
            _end(span, outcomes[index])
        if applied + duplicates:
            self._latency.observe_many(kind, elapsed_s, applied + duplicates, exemplar)
        return applied + duplicates

    async def _record(
        self, batch: list[tuple[int, Envelope]], answers: list[dict[str, Any]], deadline_s: float
    ) -> list[str]:
        """Record the batch; per message ``applied``, ``duplicate`` or the refusal reason."""
        held = {(env.component, env.shard, env.epoch) for _, env in batch}

        def still_granted() -> bool:
            # Asked inside the ledger transaction, just before COMMIT: the grant each message
            # was admitted under must still hold now, as the agent publishes it (a drain or
            # a released component withdraws it), and its lease must not have run out.
            if not self.fencing_enabled:
                return True
            now_s = self._monotonic()
            if now_s > deadline_s:
                return False
            for component, index, epoch in held:
                grant = self.grants_now(component, index)
                if grant is None or grant[0] != epoch or now_s > grant[1]:
                    return False
            return True

        reason = None
        try:
            fresh = await asyncio.to_thread(
                self.ledger.apply,
                [env for _, env in batch],
                applied_at=self._wall,
                before_commit=still_granted,
            )
        except LedgerError:
            reason = "ledger-error"
        except GrantExpired:
            reason = "lease-expired"
        if reason is not None:
            for position, _ in batch:
                answers[position] = {
                    "id": answers[position]["id"],
                    "ok": False,
                    "reason": reason,
                    "site": self.site,
                }
            self.stats.refuse(reason)
            return [reason] * len(batch)
        self.stats.applied += sum(fresh)
        self.stats.duplicates += len(fresh) - sum(fresh)
        return ["applied" if new else "duplicate" for new in fresh]


def _end(span: Span, outcome: str) -> None:
    """End an apply span with its outcome; a refusal is an error."""
    if span.is_recording():
        span.set_attribute("bfm.outcome", outcome)
        if outcome not in ("applied", "duplicate"):
            span.set_status(StatusCode.ERROR, outcome)
    span.end()
