"""Hostile input is refused with ValueError, never a crash (issue 11, item 3).

Every parser of input from outside the process is fuzzed with hypothesis: it must return
or raise ``ValueError`` (the codebase's one error for bad input, which every caller
turns into a clear message, a log line and, where it counts, a refusal), never
``KeyError``, ``TypeError``, ``AttributeError``, ``IndexError``, ``RecursionError``...

- **Store documents**, written by something else or damaged: the seeds in
  ``tests/data/store_documents.json`` are real documents, one of each kind, taken from the
  store of a finished rolling-update demo run (``open_store(url).list("")``, the run of
  tests/scenarios/test_rolling_update.py's full release); hypothesis mutates
  them (a value replaced by any JSON, a field removed, a field added, several at once)
  and also feeds arbitrary JSON.
- **Backbone envelopes** (the router's and modules' wire format): valid envelopes
  mutated, arbitrary bytes.
- **Log-store wire formats**: Loki push JSON mutated from a valid push, label-set text,
  protobuf push bodies and OTLP log and trace bodies as arbitrary bytes, Tempo JSON
  mutated from a valid trace.
- **Operator input**: durations, sizes, listen addresses, points in time (a
  ``UsageError``, exit 2), heartbeat peers, release manifests.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bfm_observe.logstore.wire_loki import (
    decode_loki_json,
    decode_loki_protobuf,
    parse_label_set,
)
from bfm_observe.logstore.wire_otlp import decode_otlp_logs, decode_otlp_traces
from bfm_observe.logstore.wire_tempo import decode_tempo_json
from failover.cli.durations import parse_duration_s, parse_point_in_time
from failover.cli.errors import UsageError
from failover.cli.logstore import parse_listen, parse_size_bytes
from failover.core.agent import LeaseRecord
from failover.core.fencing import Ownership
from failover.core.licensing import GraceRecord
from failover.core.topology import default_topology
from failover.core.update_manifest import parse_release
from failover.core.update_state import UpdateState
from failover.runtime.documents import AdminPolicy, Event, LeaderRecord
from failover.runtime.heartbeats import parse_peer
from failover.runtime.license_docs import DongleReport, LicenseStatus
from failover.runtime.version_docs import DesiredVersions, ReportedVersions
from failover.workload.envelope import Envelope

SEEDS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "store_documents.json").read_text()
)
PARSERS: dict[str, Callable[[Any], object]] = {  # key (its kind) -> what reads it
    "admin/policy": AdminPolicy.from_doc,
    "controller/leader": LeaderRecord.from_doc,
    "events/000000000001": Event.from_doc,
    "license/evidence/a": DongleReport.from_doc,
    "license/grace": GraceRecord.from_doc,
    "license/status": LicenseStatus.from_doc,
    "ownership/eap": Ownership.from_doc,
    "sites/a/lease": LeaseRecord.from_doc,
    "update/desired/a": DesiredVersions.from_doc,
    "update/reported/a": ReportedVersions.from_doc,
    "update/state": UpdateState.from_doc,
}
FUZZ = settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
Path_ = tuple[str | int, ...]


def _paths(node: Any, at: Path_ = ()) -> list[Path_]:
    found = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*at, index))
    return found


def _parent(doc: Any, path: Path_) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    """``seed`` with one to three changes: a value replaced by any JSON, a field or item
    removed, a field or item added."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if not path:
            doc = draw(JSON_VALUES) if action == "replace" else doc
            continue
        parent = _parent(doc, path)
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
    return doc


def refuses_cleanly(parse: Callable[[Any], object], value: Any) -> None:
    """``parse(value)`` returns, or raises ValueError; anything else fails the test."""
    with contextlib.suppress(ValueError):
        parse(value)


def test_every_seed_is_a_real_document_its_parser_accepts() -> None:
    """The seeds are valid (else the mutations would test nothing but the first check)."""
    assert set(PARSERS) <= set(SEEDS)
    for key, parse in PARSERS.items():
        parse(SEEDS[key])


@pytest.mark.parametrize("key", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_store_documents_damaged_or_foreign_are_refused_with_value_error(
    key: str, data: st.DataObject
) -> None:
    refuses_cleanly(PARSERS[key], data.draw(mutated(SEEDS[key])))


@pytest.mark.parametrize("key", sorted(PARSERS))
@FUZZ
@given(value=JSON_VALUES)
def test_store_documents_of_any_shape_are_refused_with_value_error(key: str, value: Any) -> None:
    refuses_cleanly(PARSERS[key], value)


VALID_ENVELOPE = Envelope("m1", "alarm", "camera-7", 3, 1.0, {"zone": 3}).to_json()


@FUZZ
@given(data=st.data())
def test_envelopes_mutated_or_random_are_refused_with_value_error(data: st.DataObject) -> None:
    doc = json.loads(VALID_ENVELOPE)
    refuses_cleanly(Envelope.from_json, json.dumps(data.draw(mutated(doc))))
    refuses_cleanly(Envelope.from_json, data.draw(st.binary(max_size=200)))


VALID_PUSH = {
    "streams": [
        {
            "stream": {"site": "a", "component": "eap", "level": "info"},
            "values": [["1700000000000000000", "line", {"trace_id": "ab" * 16}]],
        }
    ]
}


@FUZZ
@given(data=st.data())
def test_loki_push_bodies_mutated_or_random_are_refused_with_value_error(
    data: st.DataObject,
) -> None:
    body = json.dumps(data.draw(mutated(VALID_PUSH))).encode()
    refuses_cleanly(lambda b: decode_loki_json(b, "tenant"), body)
    refuses_cleanly(lambda b: decode_loki_json(b, "tenant"), data.draw(st.binary(max_size=200)))
    refuses_cleanly(parse_label_set, data.draw(st.text(max_size=40)))


@FUZZ
@given(doc=JSON_VALUES)
def test_release_manifests_of_any_shape_are_refused_with_value_error(doc: Any) -> None:
    refuses_cleanly(lambda d: parse_release(d, default_topology()), doc)


@FUZZ
@given(text=st.text(max_size=40))
def test_peer_addresses_of_any_text_are_refused_with_value_error(text: str) -> None:
    refuses_cleanly(parse_peer, text)


@FUZZ
@given(body=st.binary(max_size=300))
def test_protobuf_and_otlp_bodies_of_any_bytes_are_refused_with_value_error(body: bytes) -> None:
    refuses_cleanly(lambda b: decode_loki_protobuf(b, "tenant"), body)
    for kind in ("application/x-protobuf", "application/json"):
        refuses_cleanly(lambda b, kind=kind: decode_otlp_logs(b, kind, "tenant"), body)
        refuses_cleanly(lambda b, kind=kind: decode_otlp_traces(b, kind, "tenant"), body)


VALID_TEMPO = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "eap"}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": "ab" * 16,
                            "spanId": "cd" * 8,
                            "name": "bfm.module",
                            "startTimeUnixNano": "1700000000000000000",
                            "endTimeUnixNano": "1700000000100000000",
                        }
                    ]
                }
            ],
        }
    ]
}


def test_the_tempo_seed_is_valid() -> None:
    assert len(decode_tempo_json(VALID_TEMPO, "tenant")) == 1


@FUZZ
@given(data=st.data())
def test_tempo_bodies_mutated_are_refused_with_value_error(data: st.DataObject) -> None:
    refuses_cleanly(lambda d: decode_tempo_json(d, "tenant"), data.draw(mutated(VALID_TEMPO)))


@FUZZ
@given(text=st.text(max_size=30))
def test_operator_values_of_any_text_are_usage_errors(text: str) -> None:
    """Durations, points in time, sizes and listen addresses: a UsageError (exit 2 with
    the accepted forms) or a value, nothing else."""
    for parse in (
        parse_duration_s,
        lambda t: parse_point_in_time(t, now_wall_s=1.7e9),
        parse_size_bytes,
        parse_listen,
    ):
        with contextlib.suppress(UsageError):
            parse(text)
