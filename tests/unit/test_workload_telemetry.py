"""Telemetry of the reference backbone, in process over real TCP on 127.0.0.1: one message is
one trace from the producer through the router to the module (both children of the
producer's span, carried by the envelope's traceparent), unsampled messages make no spans
past the producer, the module's span links to the decision behind its grant, the metrics
of the catalogue count with their site/component/kind/outcome labels, and a new decision
in an ownership document makes the router's reroute span and log line in its trace.

Spans go to an SDK TracerProvider of the test's own (injected tracers: the global provider
can be set once per process), metrics to prometheus-client's default registry (read as
differences: other tests count too)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from failover import telemetry
from failover.core.fencing import Assignment, EpochFence, Ownership
from failover.core.topology import DEFAULT_COMPONENTS
from failover.workload.component_process import DecisionNotices, decision_traceparent
from failover.workload.envelope import MODULE_OF_KIND, Envelope
from failover.workload.ledger import Ledger
from failover.workload.message_metrics import observe_many
from failover.workload.module import ModuleService
from failover.workload.producer import Producer
from failover.workload.router import Router

SHARDS = 4
TEST_DEADLINE_S = 8.0
DECISION_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
DECISION_SPAN = "00f067aa0ba902b7"
DECISION = f"00-{DECISION_TRACE}-{DECISION_SPAN}-01"
EPOCH = 7


class Spans:
    """A tracer whose finished spans the test reads."""

    def __init__(self, sampler: Sampler = ALWAYS_ON) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = provider.get_tracer("test")

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def spans() -> Iterator[Spans]:
    yield Spans()


def _id(span: ReadableSpan) -> str:
    return str((span.attributes or {})["messaging.message.id"])


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _messages(site: str, component: str, kind: str, outcome: str) -> float:
    labels = {"site": site, "component": component, "kind": kind, "outcome": outcome}
    return _sample("bfm_messages_total", **labels)


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TEST_DEADLINE_S)

    return asyncio.run(bounded())


class Site:
    """Every module at one site, granted the shards ``owner`` gives it, under EPOCH."""

    def __init__(self, tmp_path: Path, name: str, shards: list[int], tracer: Tracer) -> None:
        self.name, self.shards = name, shards
        self.modules = {
            c: ModuleService(
                c,
                ledger=Ledger(tmp_path / f"ledger-{name}-{c}.db", site=name),
                fence=EpochFence(),
                grants=self.grant,
                monotonic=time.monotonic,
                wall=time.time,
                decision_of=lambda component: DECISION,
                tracer=tracer,
            )
            for c in DEFAULT_COMPONENTS
        }

    def grant(self, component: str, index: int) -> tuple[int, float] | None:
        return (EPOCH, float("inf")) if index in self.shards else None

    async def start(self) -> dict[str, tuple[str, int]]:
        return {c: await m.start("127.0.0.1", 0) for c, m in self.modules.items()}

    async def close(self) -> None:
        for module in self.modules.values():
            await module.close()


class Backbone:
    """Sites a (even shards) and b (odd), the router of site a, all tracing to ``spans``."""

    def __init__(self, tmp_path: Path, tracer: Tracer) -> None:
        self.sites = {
            "a": Site(tmp_path, "a", [0, 2], tracer),
            "b": Site(tmp_path, "b", [1, 3], tracer),
        }
        owner = [("a" if i % 2 == 0 else "b", EPOCH) for i in range(SHARDS)]
        self.owners = {
            c: Ownership(c, tuple(Assignment(*o) for o in owner), EPOCH) for c in DEFAULT_COMPONENTS
        }
        self.tracer = tracer
        self.router: Router | None = None

    async def start(self) -> tuple[str, int]:
        modules = {name: await site.start() for name, site in self.sites.items()}
        self.router = Router(
            "a", owners=lambda: self.owners, modules=modules, timeout_s=1.0, tracer=self.tracer
        )
        return await self.router.start("127.0.0.1", 0)

    async def close(self) -> None:
        if self.router is not None:
            await self.router.close()
        for site in self.sites.values():
            await site.close()


def _produce(
    tmp_path: Path, backbone_tracer: Tracer, producer_tracer: Tracer
) -> tuple[str, Producer]:
    backbone = Backbone(tmp_path, backbone_tracer)
    history = io.StringIO()

    async def scenario() -> Producer:
        address = await backbone.start()
        producer = Producer(
            [address],
            rate_per_s=200.0,
            shard_count=SHARDS,
            history=history,
            wall=time.time,
            retry_interval_s=0.01,
            timeout_s=1.0,
            site="a",
            tracer=producer_tracer,
        )
        try:
            stats = await producer.run(duration_s=0.15, give_up_s=3.0)
            assert stats.acked == stats.sent >= 12
        finally:
            await backbone.close()
        return producer

    producer = _run(scenario())
    return history.getvalue(), producer


def test_one_message_is_one_trace_from_producer_through_router_and_module(
    tmp_path: Path, spans: Spans
) -> None:
    history, _ = _produce(tmp_path, spans.tracer, spans.tracer)
    produced = {_id(s): s for s in spans.named("bfm.produce")}
    routed = {_id(s): s for s in spans.named("bfm.route")}
    applied = {_id(s): s for s in spans.named("bfm.apply")}
    sends = [json.loads(line) for line in history.splitlines() if '"op":"send"' in line]
    assert len(produced) == len(sends) >= 12
    assert set(routed) == set(applied) == set(produced)
    kinds = set()
    for msg_id, produce in produced.items():
        assert produce.kind == SpanKind.PRODUCER
        assert produce.attributes is not None
        assert produce.attributes["bfm.outcome"] == "acked"
        kind = str(produce.attributes["bfm.kind"])
        kinds.add(kind)
        assert produce.attributes["bfm.component"] == MODULE_OF_KIND[kind]
        ctx = produce.get_span_context()
        assert ctx is not None
        route, apply = routed[msg_id], applied[msg_id]
        shard = produce.attributes["bfm.shard"]
        owner = "a" if shard in (0, 2) else "b"
        for child in (route, apply):
            assert child.context is not None and child.parent is not None
            assert child.context.trace_id == ctx.trace_id  # one trace
            assert child.parent.span_id == ctx.span_id  # the producer's span is the parent
            assert child.status.status_code == StatusCode.UNSET
        assert route.kind == apply.kind == SpanKind.CONSUMER
        assert route.attributes == {
            "bfm.kind": kind,
            "bfm.router_site": "a",
            "bfm.shard": shard,
            "messaging.message.id": msg_id,
            "bfm.owner_site": owner,
            "bfm.outcome": "forwarded",
        }
        assert apply.attributes is not None
        assert apply.attributes["bfm.epoch"] == EPOCH
        assert apply.attributes["bfm.outcome"] == "applied"
        assert apply.resource is not None
        # the module's span links to the controller decision behind its grant
        assert len(apply.links) == 1
        link = apply.links[0]
        assert f"{link.context.trace_id:032x}" == DECISION_TRACE
        assert f"{link.context.span_id:016x}" == DECISION_SPAN
        assert dict(link.attributes or {}) == {"bfm.link": "granting-decision", "bfm.epoch": EPOCH}
    assert kinds == set(MODULE_OF_KIND)  # across every module, at both sites
    # the history names each sampled message's trace
    for send in sends:
        ctx = produced[send["id"]].get_span_context()
        assert ctx is not None
        assert send["trace_id"] == f"{ctx.trace_id:032x}"


def test_unsampled_messages_make_no_spans_past_the_producer(tmp_path: Path) -> None:
    """The producer's sampler says no: the traceparent still travels, flagged 00, and the
    router and module (which would record anything they start) start nothing."""
    backbone, unsampled = Spans(ALWAYS_ON), Spans(ALWAYS_OFF)

    def applied() -> float:
        return sum(_messages(site, "eap", "alarm", "applied") for site in ("a", "b"))

    before = applied()
    history, _ = _produce(tmp_path, backbone.tracer, unsampled.tracer)
    assert backbone.exporter.get_finished_spans() == ()
    assert unsampled.exporter.get_finished_spans() == ()
    sends = [json.loads(line) for line in history.splitlines() if '"op":"send"' in line]
    assert sends and all("trace_id" not in s for s in sends)
    assert applied() > before  # metrics count regardless


def test_without_a_tracer_provider_messages_carry_no_traceparent(tmp_path: Path) -> None:
    """Telemetry off (no tracer given, none configured): no span, no traceparent."""
    seen: list[Envelope] = []

    async def scenario() -> None:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                env = Envelope.from_dict(json.loads(line)["env"])
                seen.append(env)
                writer.write(json.dumps({"id": env.id, "ok": True, "epoch": 1}).encode() + b"\n")
                await writer.drain()

        server = await asyncio.start_server(client, "127.0.0.1", 0)
        address = ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
        producer = Producer(
            [address], rate_per_s=100.0, shard_count=SHARDS, history=io.StringIO(), wall=time.time
        )
        producer._tracing = False  # as in a process where bfm_observe.configure never ran
        await producer.run(duration_s=0.05, give_up_s=1.0)
        server.close()

    _run(scenario())
    assert seen and all(env.traceparent == "" for env in seen)


def _frame(msg_id: str, shard: int, traceparent: str = "") -> bytes:
    env = Envelope(msg_id, "alarm", f"k-{msg_id}", shard, 1.0, traceparent=traceparent)
    return json.dumps({"env": json.loads(env.to_json())}).encode() + b"\n"


async def _exchange(address: tuple[str, int], payload: bytes, answers: int) -> list[Any]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(payload)
    await writer.drain()
    lines = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(answers)]
    writer.close()
    return lines


SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-00"


def test_router_counts_each_outcome_and_spans_sampled_refusals(
    tmp_path: Path, spans: Spans
) -> None:
    backbone = Backbone(tmp_path, spans.tracer)
    backbone.owners["eap"] = Ownership(
        "eap", (Assignment("a", EPOCH), Assignment(None, 0), Assignment("b", EPOCH)), EPOCH
    )
    labels = ("a", "router", "alarm")
    before = {o: _messages(*labels, o) for o in ("forwarded", "no-owner", "module-unreachable")}
    malformed_before = _messages("a", "router", "unknown", "malformed")

    async def scenario() -> list[Any]:
        address = await backbone.start()
        await backbone.sites["b"].modules["eap"].close()  # b's eap is down
        try:
            return await _exchange(
                address,
                _frame("ok", 0, SAMPLED)
                + _frame("ok-unsampled", 0, UNSAMPLED)
                + _frame("nobody", 1, SAMPLED)
                + _frame("down", 2, SAMPLED)
                + b"garbage\n",
                5,
            )
        finally:
            await backbone.close()

    answers = _run(scenario())
    assert [a.get("reason") for a in answers] == [
        None,
        None,
        "no-owner",
        "module-unreachable",
        "malformed",
    ]
    after = {o: _messages(*labels, o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {
        "forwarded": 2,
        "no-owner": 1,
        "module-unreachable": 1,
    }
    assert _messages("a", "router", "unknown", "malformed") - malformed_before == 1
    routed = {_id(s): s for s in spans.named("bfm.route")}
    assert set(routed) == {"ok", "nobody", "down"}  # not the unsampled one
    assert routed["ok"].status.status_code == StatusCode.UNSET
    for msg_id, reason in (("nobody", "no-owner"), ("down", "module-unreachable")):
        span = routed[msg_id]
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes is not None and span.attributes["bfm.outcome"] == reason
    assert "bfm.owner_site" not in (routed["nobody"].attributes or {})
    assert routed["down"].attributes is not None
    assert routed["down"].attributes["bfm.owner_site"] == "b"


def test_module_counts_applied_duplicates_and_stale_epoch_refusals(
    tmp_path: Path, spans: Spans
) -> None:
    granted = {0: 3, 1: 3}
    service = ModuleService(
        "eap",
        ledger=Ledger(tmp_path / "eap.db", site="b"),
        fence=EpochFence(),
        grants=lambda c, i: (granted[i], float("inf")) if i in granted else None,
        monotonic=time.monotonic,
        wall=time.time,
        tracer=spans.tracer,  # no decision_of: no link
    )
    service.fence.learn("eap", 1, 5)  # a newer owner holds shard 1

    def metric(outcome: str) -> float:
        return _messages("b", "eap", "alarm", outcome)

    def stale(reason: str) -> float:
        return _sample("bfm_stale_epoch_refusals_total", site="b", component="eap", reason=reason)

    outcomes = ("applied", "duplicate", "stale-epoch", "not-owner")
    before = {o: metric(o) for o in outcomes}
    stale_before = {r: stale(r) for r in ("stale-epoch", "not-owner", "lease-expired")}
    count_before = _sample(
        "bfm_message_duration_seconds_count", site="b", component="eap", kind="alarm"
    )

    async def scenario() -> list[Any]:
        address = await service.start("127.0.0.1", 0)
        try:
            return await _exchange(
                address,
                _frame("m0", 0, SAMPLED)
                + _frame("m0", 0)
                + _frame("m1", 1, SAMPLED)
                + _frame("m2", 2),
                4,
            )
        finally:
            await service.close()

    answers = _run(scenario())
    assert [a.get("reason") for a in answers] == [None, None, "stale-epoch", "not-owner"]
    assert {o: metric(o) - before[o] for o in outcomes} == dict.fromkeys(outcomes, 1)
    assert {r: stale(r) - n for r, n in stale_before.items()} == {
        "stale-epoch": 1,
        "not-owner": 1,
        "lease-expired": 0,
    }
    count = _sample("bfm_message_duration_seconds_count", site="b", component="eap", kind="alarm")
    assert count - count_before == 2  # both acknowledged, the duplicate too
    applied = {_id(s): s for s in spans.named("bfm.apply")}
    assert set(applied) == {"m0", "m1"}
    assert applied["m0"].attributes is not None
    assert applied["m0"].attributes["bfm.outcome"] == "applied"
    assert applied["m0"].links == ()  # nothing names the granting decision
    assert applied["m1"].status.status_code == StatusCode.ERROR
    assert applied["m1"].attributes is not None
    assert applied["m1"].attributes["bfm.outcome"] == "stale-epoch"


def test_producer_counts_refusals_and_acks_with_exemplars_and_span_events(
    spans: Spans,
) -> None:
    attempts: dict[str, int] = {}

    async def scenario() -> None:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                env = Envelope.from_dict(json.loads(line)["env"])
                attempts[env.id] = attempts.get(env.id, 0) + 1
                answer: dict[str, Any] = {"id": env.id, "ok": True, "epoch": 4, "site": "b"}
                if attempts[env.id] == 1:
                    answer = {"id": env.id, "ok": False, "reason": "not-owner", "site": "a"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()

        server = await asyncio.start_server(client, "127.0.0.1", 0)
        address = ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
        producer = Producer(
            [address],
            rate_per_s=120.0,
            shard_count=SHARDS,
            history=io.StringIO(),
            wall=time.time,
            retry_interval_s=0.01,
            site="w",
            tracer=spans.tracer,
        )
        await producer.run(duration_s=0.1, give_up_s=2.0)
        server.close()

    kinds = sorted(MODULE_OF_KIND)
    before = {
        (k, o): _messages("w", "producer", k, o) for k in kinds for o in ("acked", "not-owner")
    }
    _run(scenario())
    n = len(attempts)
    assert n >= 6
    moved = {key: _messages("w", "producer", *key) - value for key, value in before.items()}
    assert sum(v for (_, o), v in moved.items() if o == "acked") == n
    assert sum(v for (_, o), v in moved.items() if o == "not-owner") == n
    produced = spans.named("bfm.produce")
    assert len(produced) == n
    for span in produced:
        assert [e.name for e in span.events] == ["bfm.refused"]
        assert dict(span.events[0].attributes or {}) == {
            "bfm.reason": "not-owner",
            "bfm.router": 0,
            "bfm.attempt": 1,
        }
        assert span.attributes is not None
        assert (span.attributes["bfm.owner_site"], span.attributes["bfm.epoch"]) == ("b", 4)
    trace_ids = {f"{s.context.trace_id:032x}" for s in produced if s.context is not None}
    exemplars = [
        sample.exemplar
        for metric in telemetry.MESSAGE_SECONDS.collect()
        for sample in metric.samples
        if sample.labels.get("site") == "w" and sample.exemplar is not None
    ]
    assert exemplars
    assert all(e.labels["trace_id"] in trace_ids for e in exemplars)


def test_observe_many_records_what_as_many_observations_would() -> None:
    registry = CollectorRegistry()  # not the default one: the test may run twice
    one_by_one = Histogram("one_seconds", "t", buckets=(0.01, 0.1, 1.0), registry=registry)
    at_once = Histogram("many_seconds", "t", buckets=(0.01, 0.1, 1.0), registry=registry)
    for seconds, n in ((0.005, 3), (0.05, 1), (0.5, 7), (5.0, 2), (0.05, 0)):
        for _ in range(n):
            one_by_one.observe(seconds)
        observe_many(at_once, seconds, n, {"trace_id": "ab" * 16})

    def values(h: Histogram) -> list[tuple[str, str, float]]:
        samples = [s for m in h.collect() for s in m.samples if not s.name.endswith("_created")]
        return [(s.name.split("_seconds")[1], s.labels.get("le", ""), s.value) for s in samples]

    assert values(at_once) == values(one_by_one)
    exemplars = [s.exemplar for m in at_once.collect() for s in m.samples if s.exemplar]
    assert exemplars and exemplars[0].labels == {"trace_id": "ab" * 16}


def _ownership(trace_id: str, span_id: str, owners: tuple[str, ...], epoch: int) -> Ownership:
    shards = tuple(Assignment(o, epoch) for o in owners)
    return Ownership("eap", shards, epoch, trace_id, span_id)


def test_a_new_decision_makes_a_reroute_span_in_its_trace_and_log_lines(
    spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    notices = DecisionNotices("b", "eap", routes=True, sites=("a", "b"), tracer=spans.tracer)
    first = _ownership("1" * 32, "2" * 16, ("a", "a", "b", "b"), 3)
    caplog.set_level(logging.INFO, logger="bfm")
    notices.observe({"eap": first})  # what the router started with: no reroute
    notices.observe({"eap": first})
    assert spans.named("bfm.reroute") == []
    module_lines = [r for r in caplog.records if r.name == "bfm.module"]
    assert len(module_lines) == 1  # the module logs the decision it applies, once
    assert getattr(module_lines[0], "trace_id", None) == "1" * 32

    failover = _ownership(DECISION_TRACE, DECISION_SPAN, ("b", "b", "b", "b"), 4)
    notices.observe({"eap": failover})
    notices.observe({"eap": failover})
    (span,) = spans.named("bfm.reroute")
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == DECISION_TRACE
    assert f"{span.parent.span_id:016x}" == DECISION_SPAN
    assert dict(span.attributes or {}) == {
        "bfm.component": "eap",
        "bfm.router_site": "b",
        "bfm.epoch": 4,
        "bfm.shards.a": 0,
        "bfm.shards.b": 4,
    }
    (reroute,) = [r for r in caplog.records if r.name == "bfm.router"]
    assert reroute.getMessage().startswith("router at site b reroutes eap")
    assert getattr(reroute, "trace_id", None) == DECISION_TRACE
    assert getattr(reroute, "span_id", None) == f"{span.context.span_id:016x}"
    assert getattr(reroute, "event", None) == "reroute"
    module_lines = [r for r in caplog.records if r.name == "bfm.module"]
    assert [getattr(r, "trace_id", None) for r in module_lines] == ["1" * 32, DECISION_TRACE]


def test_a_transfer_in_the_trace_of_its_drain_is_rerouted_too(
    spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    """A drain and the transfer that finishes it share a trace (each its own decision
    span): the router logs both, so its log never shows the drained map as the last."""
    notices = DecisionNotices("b", "eap", routes=True, sites=("a", "b"), tracer=spans.tracer)
    caplog.set_level(logging.INFO, logger="bfm")
    notices.observe({"eap": _ownership("1" * 32, "2" * 16, ("a", "a", "a", "a"), 1)})
    notices.observe({"eap": _ownership(DECISION_TRACE, DECISION_SPAN, ("a", "a", "a", "a"), 2)})
    notices.observe({"eap": _ownership(DECISION_TRACE, "3" * 16, ("b", "b", "b", "b"), 3)})
    epochs = [dict(s.attributes or {})["bfm.epoch"] for s in spans.named("bfm.reroute")]
    assert epochs == [2, 3]
    lines = [r.getMessage() for r in caplog.records if r.name == "bfm.router"]
    assert [line.split("under")[0].split(": ")[1] for line in lines] == [
        "shards a=4 b=0 ",
        "shards a=0 b=4 ",
    ]


def test_a_decision_traceparent_needs_both_ids() -> None:
    assert decision_traceparent(_ownership(DECISION_TRACE, DECISION_SPAN, ("a",), 1)) == DECISION
    assert decision_traceparent(_ownership(DECISION_TRACE, "", ("a",), 1)) == ""
    assert decision_traceparent(_ownership("", DECISION_SPAN, ("a",), 1)) == ""
    assert decision_traceparent(_ownership("0" * 32, DECISION_SPAN, ("a",), 1)) == ""
