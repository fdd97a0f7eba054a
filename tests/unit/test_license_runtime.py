"""Licensing at run time, on a memory store with a fake clock and real signed files: each
site publishes its dongle, the leader judges, keeps the grace start in the store (a new
leader does not reset it) and exports the license metrics only while it leads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from failover.adapters.fake_clock import FakeClock
from failover.adapters.license_config import (
    CONFIG_FILE,
    LicenseConfig,
    LicenseConfigError,
    dev_setup,
)
from failover.adapters.license_dongle import LicenseFileDongle
from failover.adapters.memory_store import MemoryStore
from failover.core.licensing import GRACE_KEY, DongleStatus, LicenseState
from failover.runtime.license_docs import (
    EVIDENCE_FRESH_S,
    evidence_key,
    read_grace,
    read_status,
)
from failover.runtime.license_keeper import DonglePublisher, LicenseKeeper, LicensePolicy

SITES = ("a", "b", "w")
GRACE_S = 60.0


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.config = dev_setup(
            tmp_path / "license",
            system_id="sys-1",
            sites=SITES,
            now_wall_s=self.clock.wall(),
            grace_s=GRACE_S,
        )
        key = self.config.public_key()
        self.publishers = {
            s: DonglePublisher(
                self.store,
                LicenseFileDongle(self.config.license_file(s), key, site=s, system_id="sys-1"),
                site=s,
                clock=self.clock,
            )
            for s in SITES
        }
        self.policy = LicensePolicy("sys-1", GRACE_S)
        self.keeper = LicenseKeeper(self.store, self.policy, site="w", clock=self.clock)

    def step(self, seconds: float = 1.0, *, down: tuple[str, ...] = ()) -> LicenseState:
        self.clock.advance(seconds)
        for site, publisher in self.publishers.items():
            if site not in down:
                publisher.tick()
        verdict = self.keeper.tick()
        assert verdict is not None
        return verdict.state


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"component": "controller", **labels})


def test_licensed_by_every_site_then_by_the_last_one_left(world: World) -> None:
    assert world.step() is LicenseState.LICENSED
    status = read_status(world.store)
    assert status is not None and status.licensed_by == SITES
    world.config.license_file("a").unlink()
    world.config.license_file("b").unlink()
    assert world.step() is LicenseState.LICENSED
    status = read_status(world.store)
    assert status is not None and status.licensed_by == ("w",)
    assert status.dongles["a"].status is DongleStatus.MISSING
    assert "no license file" in status.dongles["a"].reason


def test_a_crashed_site_stops_counting_once_its_evidence_is_stale(world: World) -> None:
    world.step()
    world.config.license_file("b").unlink()
    world.config.license_file("w").unlink()
    assert world.step(down=("a",)) is LicenseState.LICENSED  # a's last report still fresh
    state = LicenseState.LICENSED
    for _ in range(int(EVIDENCE_FRESH_S) + 2):
        state = world.step(down=("a",))
    assert state is LicenseState.GRACE
    assert world.step() is LicenseState.LICENSED  # a is back


def test_grace_survives_a_new_leader_and_ends_unlicensed(world: World) -> None:
    world.step()
    for site in SITES:
        world.config.license_file(site).unlink()
    assert world.step() is LicenseState.GRACE
    record, _ = read_grace(world.store)
    assert record is not None and record.started_at_wall_s == world.clock.wall()
    started = record.started_at_wall_s
    world.step(30.0)
    world.keeper.stop_leading()
    world.keeper = LicenseKeeper(world.store, world.policy, site="a", clock=world.clock)
    assert world.step(20.0) is LicenseState.GRACE  # 50 s of 60: the new leader kept the start
    record, _ = read_grace(world.store)
    assert record is not None and record.started_at_wall_s == started
    assert world.step(10.0) is LicenseState.UNLICENSED
    status = read_status(world.store)
    assert status is not None and status.grace_remaining_s == 0.0
    assert "refused" in status.reason and "alarms still flow" in status.reason


def test_a_renewed_file_ends_grace_and_clears_the_start(world: World, tmp_path: Path) -> None:
    world.step()
    saved = {s: world.config.license_file(s).read_text() for s in SITES}
    for site in SITES:
        world.config.license_file(site).unlink()
    assert world.step() is LicenseState.GRACE
    world.config.license_file("b").write_text(saved["b"])
    assert world.step() is LicenseState.LICENSED
    record, _ = read_grace(world.store)
    assert record is not None and record.started_at_wall_s is None


def test_tampered_and_foreign_files_are_named(world: World, tmp_path: Path) -> None:
    world.step()
    path = world.config.license_file("a")
    doc = json.loads(path.read_text())
    doc["payload"]["expires_at"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(doc))
    other = dev_setup(tmp_path / "other", system_id="sys-2", sites=("b",), now_wall_s=0.0)
    world.config.license_file("b").write_text(other.license_file("b").read_text())
    assert world.step() is LicenseState.LICENSED
    status = read_status(world.store)
    assert status is not None and status.licensed_by == ("w",)
    assert status.dongles["a"].status is DongleStatus.TAMPERED
    # signed by another key: this system's public key does not verify it
    assert status.dongles["b"].status is DongleStatus.TAMPERED


def test_metrics_follow_the_verdict_and_leave_with_the_leadership(world: World) -> None:
    world.step()
    assert _gauge("bfm_license_state", site="w", state="licensed") == 1.0
    assert _gauge("bfm_license_state", site="w", state="grace") == 0.0
    assert _gauge("bfm_license_dongle_valid", site="a") == 1.0
    assert _gauge("bfm_license_dongle_status", site="a", status="valid") == 1.0
    expiry = _gauge("bfm_license_dongle_expiry_timestamp_seconds", site="a")
    assert expiry is not None and expiry > world.clock.wall()
    world.config.license_file("a").unlink()
    world.step()
    assert _gauge("bfm_license_dongle_valid", site="a") == 0.0
    assert _gauge("bfm_license_dongle_status", site="a", status="missing") == 1.0
    assert _gauge("bfm_license_dongle_expiry_timestamp_seconds", site="a") is None
    assert _gauge("bfm_license_grace_remaining_seconds", site="w") == GRACE_S
    world.keeper.stop_leading()
    assert _gauge("bfm_license_state", site="w", state="licensed") is None
    assert _gauge("bfm_license_dongle_valid", site="b") is None


def test_a_damaged_evidence_document_reads_as_malformed(world: World) -> None:
    world.step()
    got = world.store.get(evidence_key("a"))
    assert got is not None
    world.store.compare_and_set(evidence_key("a"), {"junk": 1}, expected_revision=got.revision)
    world.clock.advance(0.5)
    verdict = world.keeper.tick()
    assert verdict is not None and verdict.licensed_by == ("b", "w")
    assert verdict.dongles["a"].status is DongleStatus.MALFORMED


def test_a_damaged_grace_record_is_replaced(world: World) -> None:
    world.step()
    got = world.store.get(GRACE_KEY)
    assert got is not None
    world.store.compare_and_set(GRACE_KEY, {"schema": "x"}, expected_revision=got.revision)
    assert world.step() is LicenseState.LICENSED
    record, _ = read_grace(world.store)
    assert record is not None and record.started_at_wall_s is None


def test_the_config_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(LicenseConfigError, match=r"no license\.json"):
        LicenseConfig.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"schema": "bfm.license-config/1", "system_id": ""}')
    with pytest.raises(LicenseConfigError, match="'system_id' must be"):
        LicenseConfig.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(
        '{"schema": "bfm.license-config/1", "system_id": "s", "public_key": "nope.key"}'
    )
    config = LicenseConfig.load(tmp_path)
    with pytest.raises(LicenseConfigError, match=r"nope\.key"):
        config.public_key()
