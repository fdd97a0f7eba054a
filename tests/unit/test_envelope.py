"""The backbone envelope: round trip, strict validation, stable sharding."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.workload.envelope import MODULE_OF_KIND, SCHEMA, Envelope, shard_of

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

envelopes = st.builds(
    Envelope,
    id=st.text(min_size=1, max_size=40),
    kind=st.sampled_from(sorted(MODULE_OF_KIND)),
    shard_key=st.text(min_size=1, max_size=40),
    shard=st.integers(0, 1000),
    sent_at=st.floats(0, 4e9, allow_nan=False),
    payload=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10), max_size=4),
    epoch=st.integers(0, 10**9),
    traceparent=st.sampled_from(["", TRACEPARENT]),
)


@settings(max_examples=80)
@given(envelopes)
def test_round_trip(env: Envelope) -> None:
    assert Envelope.from_json(env.to_json()) == env
    assert json.loads(env.to_json())["schema"] == SCHEMA


def test_kinds_route_to_their_modules() -> None:
    env = Envelope("m1", "alarm", "camera-1", 3, 1.0)
    assert env.component == "eap"
    assert MODULE_OF_KIND == {
        "alarm": "eap",
        "event": "eep",
        "auth": "aam",
        "media": "msm",
        "geo": "gsm",
        "status": "backbone",
    }


def test_stamping_sets_only_the_epoch() -> None:
    env = Envelope("m1", "event", "door-4", 2, 5.0, {"x": 1}, traceparent=TRACEPARENT)
    stamped = env.stamped(17)
    assert stamped.epoch == 17
    assert stamped.stamped(0) == env


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schema": "bfm.envelope/2"}, "schema"),
        ({"id": ""}, "id"),
        ({"id": 5}, "id"),
        ({"kind": "video"}, "kind"),
        ({"shard": -1}, "shard"),
        ({"shard": True}, "shard"),
        ({"epoch": "3"}, "epoch"),
        ({"sent_at": float("nan")}, "sent_at"),
        ({"sent_at": "now"}, "sent_at"),
        ({"payload": []}, "payload"),
        ({"traceparent": "abc"}, "traceparent"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_malformed_envelopes_name_the_field(change: dict[str, object], field: str) -> None:
    data = json.loads(Envelope("m1", "alarm", "k", 0, 1.0).to_json())
    data.update(change)
    with pytest.raises(ValueError, match=field):
        Envelope.from_dict(data)


@pytest.mark.parametrize("text", ["", "not json", "[]", "3", b"\xff\xfe"])
def test_garbage_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError, match="envelope"):
        Envelope.from_json(text)


def test_oversized_envelopes_are_refused() -> None:
    env = Envelope("m1", "media", "k", 0, 1.0, {"blob": "x" * 70_000})
    with pytest.raises(ValueError, match="exceeds"):
        Envelope.from_json(env.to_json())


def test_shards_are_stable_across_processes_and_spread() -> None:
    keys = [f"camera-{i}" for i in range(2000)]
    here = [shard_of(k, 16) for k in keys]
    code = (
        "from failover.workload.envelope import shard_of; import sys; "
        "print([shard_of(f'camera-{i}', 16) for i in range(2000)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert json.loads(other.stdout) == here
    counts = [here.count(s) for s in range(16)]
    assert min(counts) > 80 and max(counts) < 170  # about 125 each
