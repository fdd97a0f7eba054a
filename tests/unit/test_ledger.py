"""The module ledger: new vs duplicate, durable across reopen, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.workload.envelope import Envelope
from failover.workload.ledger import GrantExpired, Ledger, LedgerError


def _env(i: int, epoch: int = 1) -> Envelope:
    return Envelope(f"m{i}", "alarm", f"k{i}", i % 4, float(i), epoch=epoch)


def test_apply_records_new_and_skips_duplicates(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "eap.db", site="a")
    assert ledger.apply([_env(1), _env(2)], applied_at=10.0) == [True, True]
    assert ledger.apply([_env(2, epoch=5), _env(3)], applied_at=11.0) == [False, True]
    assert len(ledger) == 3
    rows = list(ledger.rows())
    assert [(r.id, r.epoch, r.site) for r in rows] == [
        ("m1", 1, "a"),
        ("m2", 1, "a"),
        ("m3", 1, "a"),
    ]
    assert rows[0].component == "eap"
    ledger.close()


def test_a_batch_with_the_same_id_twice_applies_it_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "eap.db", site="a")
    assert ledger.apply([_env(1), _env(1)], applied_at=1.0) == [True, False]


def test_entries_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "eap.db"
    first = Ledger(path, site="b")
    first.apply([_env(i) for i in range(50)], applied_at=1.0)
    first.close()
    again = Ledger(path, site="b")
    assert len(again) == 50
    assert again.apply([_env(7)], applied_at=2.0) == [False]


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger(tmp_path / "nope" / "eap.db", site="a")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "eap.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="cannot"):
        ledger = Ledger(path, site="a")
        ledger.apply([_env(1)], applied_at=1.0)


def test_a_false_before_commit_rolls_the_whole_batch_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "eap.db", site="a")
    with pytest.raises(GrantExpired):
        ledger.apply([_env(1), _env(2)], applied_at=1.0, before_commit=lambda: False)
    assert len(ledger) == 0
    assert ledger.apply([_env(1)], applied_at=2.0, before_commit=lambda: True) == [True]


def test_a_clock_for_applied_at_is_read_after_the_commit_check(tmp_path: Path) -> None:
    """The rows carry the moment of the commit, not of admission: a writer paused between
    the two is judged by when its write landed."""
    ledger = Ledger(tmp_path / "eap.db", site="a")
    calls: list[str] = []

    def check() -> bool:
        calls.append("check")
        return True

    def clock() -> float:
        calls.append("clock")
        return 42.0

    ledger.apply([_env(1)], applied_at=clock, before_commit=check)
    assert calls == ["check", "clock"]
    assert [r.applied_at for r in ledger.rows()] == [42.0]
