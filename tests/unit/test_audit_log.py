"""Appending to the audit log (failover.runtime.audit_log) with a real sqlite store: the
lock, the head anchored by compare-and-set, two processes at once, the store away."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failover.adapters.fake_clock import FakeClock
from failover.adapters.store_url import open_store
from failover.core.audit import AuditEntry, AuditHead, Outcome, Problem, chain, parse_record
from failover.ports import CoordinationStore, StoreUnavailable
from failover.runtime import audit_log
from failover.runtime.audit_log import (
    AUDIT_HEAD_KEY,
    AuditError,
    AuditTrail,
    locate_audit_log,
    read_head,
    read_records,
    verify_log,
)


class Unreachable:
    """A store that can be cut off: every call then raises StoreUnavailable."""

    def __init__(self, inner: CoordinationStore) -> None:
        self.inner, self.down, self.calls = inner, False, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise StoreUnavailable("connection refused")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CoordinationStore]:
    opened = open_store(f"sqlite://{tmp_path / 'bfm.db'}")
    yield opened
    opened.close()


def trail(path: Path, store: Any, clock: FakeClock | None = None, **how: Any) -> AuditTrail:
    return AuditTrail(path, store, who="op@host", clock=clock or FakeClock(), **how)


def test_appends_chain_up_and_the_head_follows(tmp_path: Path, store: CoordinationStore) -> None:
    path = tmp_path / "audit.log"
    t = trail(path, store)
    first = t.record("drain", "drain a", why="update a", before={"d": []}, after={"d": ["a"]})
    assert first.anchored and first.records[0].seq == 1
    both = t.append([AuditEntry("op@host", "undrain", "undrain a")] * 2)
    assert [r.seq for r in both.records] == [2, 3] and both.anchored
    assert read_head(store) == both.records[-1].head
    verdict = verify_log(path, read_head(store))
    assert verdict.intact and verdict.records == 3
    assert oct(path.stat().st_mode & 0o777) == oct(audit_log.FILE_MODE)
    records = list(read_records(path))
    assert [r.what for r in records if not isinstance(r, tuple)] == [
        "drain a",
        "undrain a",
        "undrain a",
    ]


def test_no_secret_reaches_the_audit_log(tmp_path: Path, store: CoordinationStore) -> None:
    """An operator's reason and a state document are redacted before they are chained
    (bfm_observe.redaction), and the chain of what was written still verifies."""
    path = tmp_path / "audit.log"
    secret = "s3cr3t-Pa55word-42"
    trail(path, store).record(
        "license.issue",
        f"issued with signing_key={secret}",
        why=f"rotated: the old token={secret} leaked",
        before={"store": f"etcd://root:{secret}@10.0.0.1:2379", "password": secret},
        after={"api_key": secret, "shards": 4},
    )
    text = path.read_text()
    assert secret not in text
    assert text.count("[REDACTED]") == 5
    assert verify_log(path, read_head(store)).intact


def test_each_record_is_logged(
    tmp_path: Path, store: CoordinationStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bfm.audit")
    trail(tmp_path / "audit.log", store).record(
        "switchover", "switchover eap to b", why="maintenance", trace_id="ab" * 16
    )
    [logged] = [r for r in caplog.records if r.name == "bfm.audit"]
    fields = vars(logged)
    assert fields["event"] == "audit" and fields["audit_seq"] == 1
    assert (fields["who"], fields["action"], fields["why"]) == (
        "op@host",
        "switchover",
        "maintenance",
    )
    assert fields["trace_id"] == "ab" * 16 and len(fields["hash"]) == 64


def test_store_away_keeps_the_record_and_a_later_append_anchors_it(
    tmp_path: Path, store: CoordinationStore
) -> None:
    path, flaky = tmp_path / "audit.log", Unreachable(store)
    t = trail(path, flaky)
    t.record("drain", "drain a")
    flaky.down = True
    lagging = t.record("undrain", "undrain a")
    assert not lagging.anchored and "StoreUnavailable" in lagging.note
    assert t.warnings and "audit record 2" in t.warnings[0]
    found = verify_log(path, read_head(store)).findings
    assert [(f.line, f.problem) for f in found] == [(2, Problem.UNANCHORED)]
    flaky.down = False
    assert t.record("rebalance", "rebalance").anchored
    assert verify_log(path, read_head(store)).intact


def test_a_controller_leaves_a_failed_store_alone_for_a_while(
    tmp_path: Path, store: CoordinationStore
) -> None:
    clock, flaky = FakeClock(), Unreachable(store)
    t = trail(tmp_path / "audit.log", flaky, clock, anchor_retry_after_s=5.0)
    flaky.down = True
    assert not t.record("decision.failover", "failover eap").anchored
    calls = flaky.calls
    assert not t.record("decision.failover", "failover gsm").anchored
    assert flaky.calls == calls  # no store request within 5 s of the failure
    flaky.down = False
    clock.advance(1.0)
    assert t.anchor_pending() != "" and read_head(store) is None
    clock.advance(5.0)
    assert t.anchor_pending() == "" and t.pending is None
    second = parse_record((tmp_path / "audit.log").read_bytes().splitlines()[1])
    assert read_head(store) == AuditHead(2, second.hash)
    assert verify_log(tmp_path / "audit.log", read_head(store)).intact


def test_a_cut_log_is_never_anchored_over(tmp_path: Path, store: CoordinationStore) -> None:
    path = tmp_path / "audit.log"
    t = trail(path, store)
    for i in range(3):
        t.record("drain", f"drain #{i}")
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:2]))  # cut record 3
    again = t.record("undrain", "undrain a")  # numbered 3 again, after the cut
    assert not again.anchored and "does not fit the head" in again.note
    assert read_head(store) is not None and read_head(store).seq == 3  # type: ignore[union-attr]
    assert not verify_log(path, read_head(store)).intact  # the cut still shows


def test_an_edited_last_record_is_never_anchored_over(
    tmp_path: Path, store: CoordinationStore
) -> None:
    """Even with its hash recomputed: the head in the store still has the old one."""
    path = tmp_path / "audit.log"
    t = trail(path, store)
    t.record("drain", "drain a")
    forged = chain(AuditEntry("op@host", "drain", "drain b"), after=None, at_wall_s=1.0)
    path.write_bytes(forged.line())
    assert not t.record("undrain", "undrain a").anchored
    assert read_head(store).seq == 1  # type: ignore[union-attr]
    assert [f.problem for f in verify_log(path, read_head(store)).findings] == [
        Problem.DIVERGED,
        Problem.UNANCHORED,
    ]


def test_a_damaged_last_line_stops_appends(tmp_path: Path, store: CoordinationStore) -> None:
    path = tmp_path / "audit.log"
    t = trail(path, store)
    t.record("drain", "drain a")
    with path.open("ab") as f:
        f.write(b'{"half a rec')
    with pytest.raises(AuditError, match="cut off"):
        t.check()
    with pytest.raises(AuditError, match="cut off"):
        t.record("undrain", "undrain a")
    path.write_bytes(b"not json\n")
    with pytest.raises(AuditError, match=r"last record .* is damaged"):
        t.record("undrain", "undrain a")


def test_an_unopenable_log_is_an_audit_error(tmp_path: Path, store: CoordinationStore) -> None:
    with pytest.raises(AuditError, match=r"cannot open the audit log .*missing"):
        trail(tmp_path / "missing" / "audit.log", store).check()


def test_a_failed_write_leaves_no_half_record(
    tmp_path: Path, store: CoordinationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    t = trail(path, store)
    t.record("drain", "drain a")
    size = path.stat().st_size
    real_write, writes = os.write, []

    def half_then_full(fd: int, data: Any) -> int:
        writes.append(len(data))
        if len(writes) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_log.os, "write", half_then_full)
    with pytest.raises(AuditError, match="No space left"):
        t.record("undrain", "undrain a")
    monkeypatch.undo()
    assert path.stat().st_size == size
    assert t.record("undrain", "undrain a").anchored
    assert verify_log(path, read_head(store)).intact


APPENDER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from failover.adapters.store_url import open_store
    from failover.adapters.system_clock import SystemClock
    from failover.runtime.audit_log import AuditTrail

    path, url, who, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    go = Path(sys.argv[5])
    store = open_store(url)
    trail = AuditTrail(path, store, who=who, clock=SystemClock())
    while not go.exists():  # both start appending together
        time.sleep(0.005)
    for i in range(count):
        done = trail.record("decision.failover", f"{who} #{i}", after={"i": i})
        assert done.anchored, done.note
    store.close()
    """
)


def test_two_processes_appending_at_once_make_one_valid_chain(tmp_path: Path) -> None:
    path, url, count = tmp_path / "audit.log", f"sqlite://{tmp_path / 'bfm.db'}", 100
    go = tmp_path / "go"
    store = open_store(url)  # create the schema before both start
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), url, who, str(count), str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("controller@w", "op@host")
    ]
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    head = read_head(store)
    store.close()
    assert head is not None and head.seq == 2 * count
    verdict = verify_log(path, head)
    assert verdict.intact, verdict.findings
    records = [r for r in read_records(path) if not isinstance(r, tuple)]
    for who in ("controller@w", "op@host"):
        mine = [r.what for r in records if r.who == who]
        assert mine == [f"{who} #{i}" for i in range(count)]  # each writer's in its order
    whos = [r.who for r in records]
    assert any(a != b for a, b in itertools.pairwise(whos))  # they interleaved


def test_where_the_audit_log_is(tmp_path: Path) -> None:
    env = {audit_log.AUDIT_LOG_ENV: str(tmp_path / "x.log")}
    db = f"sqlite://{tmp_path / 'run' / 'bfm.db'}"
    assert locate_audit_log(run_dir=tmp_path, store_url=db, environ=env) == tmp_path / "x.log"
    assert locate_audit_log(run_dir=tmp_path, store_url=db, environ={}) == tmp_path / "audit.log"
    assert locate_audit_log(run_dir=None, store_url=db, environ={}) == (
        tmp_path / "run" / "audit.log"
    )
    assert locate_audit_log(run_dir=None, store_url="etcd://h:2379", environ={}) is None


def test_without_a_store_records_are_kept_and_said_unanchored(tmp_path: Path) -> None:
    t = trail(tmp_path / "audit.log", None)
    done = t.record("license.issue", "license issued", outcome=Outcome.DONE)
    assert not done.anchored and "no coordination store" in done.note
    doc = json.loads((tmp_path / "audit.log").read_text())
    assert doc["seq"] == 1 and doc["who"] == "op@host"


def test_a_damaged_head_is_left_alone(tmp_path: Path, store: CoordinationStore) -> None:
    store.create(AUDIT_HEAD_KEY, {"seq": "three"})
    done = trail(tmp_path / "audit.log", store).record("drain", "drain a")
    assert not done.anchored and "damaged" in done.note
    assert store.get(AUDIT_HEAD_KEY).value == {"seq": "three"}  # type: ignore[union-attr]
