"""Grants published by the site agent for the router and modules on the same host."""

from __future__ import annotations

from pathlib import Path

import pytest
from small_system import SmallSystem

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.runtime.grants import Grants, GrantsReader, grants_path, publish


def test_round_trip_and_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    grants = Grants("a", 2, clock.monotonic() + 1.0, {("eap", 3): 7, ("eep", 0): 2})
    path = grants_path(tmp_path, "a")
    publish(path, grants)
    reader = GrantsReader(path, monotonic=clock.monotonic)
    assert reader.current() == grants
    assert reader.epoch("eap", 3) == (7, grants.valid_until_mono_s)
    assert reader.epoch("eap", 4) is None
    clock.advance(1.01)
    assert reader.epoch("eap", 3) is None  # the agent stopped renewing: run out


def test_missing_or_malformed_files_grant_nothing(tmp_path: Path) -> None:
    path = tmp_path / "grants-a.json"
    reader = GrantsReader(path, monotonic=FakeClock().monotonic)
    assert reader.epoch("eap", 0) is None
    path.write_text("{not json")
    assert reader.epoch("eap", 0) is None
    assert reader.errors == 1


def test_a_new_file_is_read_again(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "grants-a.json"
    reader = GrantsReader(path, monotonic=clock.monotonic)
    publish(path, Grants("a", 1, clock.monotonic() + 1, {("eap", 0): 1}))
    assert reader.epoch("eap", 0) == (1, clock.monotonic() + 1)
    publish(path, Grants("a", 1, clock.monotonic() + 2, {("eap", 0): 4}))
    assert reader.epoch("eap", 0) == (4, clock.monotonic() + 2)


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"site": "a"}',
        '{"site":"a","session":1,"valid_until_mono_s":1,"shards":{"eap":{"x":1}}}',
    ],
)
def test_malformed_grants_are_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed grants"):
        Grants.from_json(text)


def test_the_agent_grants_exactly_what_it_serves_until_its_deadline() -> None:
    system = SmallSystem(MemoryStore(), FakeClock())
    system.run(20)
    agents, clock, timing = system.agents, system.clock, system.timing
    a, b = agents["a"].grants(), agents["b"].grants()
    assert len(a.epochs) == len(b.epochs) == 12  # 6 components x 2 of 4 shards
    assert not set(a.epochs) & set(b.epochs)
    assert a.valid_until_mono_s == agents["a"].agent.last_renew_start_s + timing.renew_deadline_s
    clock.advance(timing.renew_deadline_s + 0.1)  # a stops renewing
    assert agents["a"].grants().epochs == {}
