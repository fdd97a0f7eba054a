"""`bfm audit verify|show`: exit codes and what they say, on a log written by the real
append path and a real sqlite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.adapters.fake_clock import FakeClock
from failover.adapters.store_url import open_store
from failover.cli.main import run
from failover.ports import CoordinationStore
from failover.runtime.audit_log import AuditTrail
from failover.workload.endpoints import Endpoints


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CoordinationStore]:
    opened = open_store(f"sqlite://{tmp_path / 'bfm.db'}")
    yield opened
    opened.close()


@pytest.fixture
def log(tmp_path: Path, store: CoordinationStore) -> Path:
    """Three records, one per hour from 2023-11-14T22:13:20Z, the head anchored."""
    path = tmp_path / "audit.log"
    clock = FakeClock()
    trail = AuditTrail(path, store, who="op@host", clock=clock)
    trail.record("drain", "drain a: site a drained", why="update a", trace_id="")
    clock.advance(3600)
    trail.record("undrain", "undrain a: site a undrained", why="[red]done[/red]")
    clock.advance(3600)
    trail.record("decision.failover", "failover eap shards [0]", trace_id="c" * 32)
    return path


def bfm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def verify(capsys: pytest.CaptureFixture[str], log: Path, *more: str) -> tuple[int, str, str]:
    url = f"sqlite://{log.parent / 'bfm.db'}"
    return bfm(capsys, "audit", "verify", f"--audit-log={log}", f"--store={url}", *more)


def test_an_intact_log_exits_0(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = verify(capsys, log)
    assert (code, err) == (0, "")
    assert out == f"audit log {log}: intact: 3 record(s), head at record 3 in sqlite://" + str(
        log.parent / "bfm.db\n"
    )


def test_a_flipped_byte_exits_1_naming_the_record(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(log.read_bytes())
    at = data.index(b"undrained")
    data[at] ^= 0x01  # 'u' -> 't'
    log.write_bytes(bytes(data))
    code, out, _ = verify(capsys, log)
    assert code == 1
    assert "TAMPERED: 1 finding(s) in 3 record(s)" in out
    assert "  record 2: edited: its content does not match its hash" in out


def test_the_last_record_cut_off_exits_1(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:-1]))
    code, out, _ = verify(capsys, log)
    assert code == 1
    assert "the log ends at record 2 but the store's head is at record 3" in out


def test_a_removed_log_exits_1_when_a_head_was_anchored(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.unlink()
    code, out, _ = verify(capsys, log)
    assert code == 1 and "the log ends at record 0" in out


def test_json_lists_every_finding(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[1] + lines[0] + lines[2])
    code, out, _ = verify(capsys, log, "--json")
    data = json.loads(out)
    assert code == 1 and data["intact"] is False and data["records"] == 3
    assert data["head"]["seq"] == 3
    assert [(f["line"], f["seq"], f["problem"]) for f in data["findings"]] == [
        (1, 2, "broken_chain"),
        (2, 1, "broken_chain"),
        (3, 3, "broken_chain"),
    ]


def test_a_damaged_head_exits_1(
    log: Path, store: CoordinationStore, capsys: pytest.CaptureFixture[str]
) -> None:
    got = store.get("audit/head")
    assert got is not None
    store.compare_and_set("audit/head", {"seq": 0}, expected_revision=got.revision)
    code, out, _ = verify(capsys, log)
    assert code == 1 and "the store's audit/head is damaged" in out


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite://{tmp_path / 'bfm.db'}"
    open_store(url).close()
    code, _, err = bfm(capsys, "audit", "verify", f"--audit-log={tmp_path / 'none.log'}")
    assert code == 2 and "no store to check the log's head against" in err
    code, _, err = bfm(
        capsys, "audit", "verify", f"--audit-log={tmp_path / 'none.log'}", f"--store={url}"
    )
    assert code == 2 and "no audit log at" in err and "nothing to check" in err
    code, _, err = bfm(capsys, "audit", "verify", f"--audit-log={tmp_path}", f"--store={url}")
    assert code == 2 and "is a directory" in err
    code, _, err = bfm(capsys, "audit", "verify", f"--run-dir={tmp_path / 'nowhere'}")
    assert code == 2 and "endpoints.json" in err
    code, _, err = bfm(capsys, "audit", "show", f"--audit-log={tmp_path / 'none.log'}")
    assert code == 2 and "no audit log at" in err


def test_an_unreachable_store_exits_3(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"sqlite://{log.parent / 'gone' / 'bfm.db'}"
    code, _, err = bfm(capsys, "audit", "verify", f"--audit-log={log}", f"--store={missing}")
    assert code == 3 and "no BFM store at" in err


def test_a_run_directory_names_both(
    tmp_path: Path, log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Endpoints(f"sqlite://{tmp_path / 'bfm.db'}", 4, {}).save(tmp_path)
    code, out, _ = bfm(capsys, "audit", "verify", f"--run-dir={tmp_path}")
    assert code == 0 and f"audit log {log}: intact" in out


def test_show_lists_the_records_as_typed(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = bfm(capsys, "audit", "show", f"--audit-log={log}")
    assert code == 0
    assert "2023-11-14T22:13:20Z" in out and "op@host" in out and "drain a: site a" in out
    assert "[red]done[/red]" in out  # shown as typed, never as markup
    assert "c" * 32 in out
    code, out, _ = bfm(capsys, "audit", "show", f"--audit-log={log}", "--json")
    assert [r["seq"] for r in json.loads(out)] == [1, 2, 3]
    since = "--since=2023-11-14T23:00:00Z"
    code, out, _ = bfm(capsys, "audit", "show", f"--audit-log={log}", since, "--json")
    assert [r["action"] for r in json.loads(out)] == ["undrain", "decision.failover"]
    code, out, _ = bfm(capsys, "audit", "show", f"--audit-log={log}", "--since=2999-01-01T00:00Z")
    assert code == 2  # not RFC 3339 (no seconds): a usage error
    code, out, _ = bfm(capsys, "audit", "show", f"--audit-log={log}", "--since=1m")
    assert (code, out) == (0, "no audit records in that time\n")


def test_show_warns_of_lines_that_are_not_records(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with log.open("ab") as f:
        f.write(b"garbage\n")
    code, out, err = bfm(capsys, "audit", "show", f"--audit-log={log}", "--json")
    assert code == 0 and len(json.loads(out)) == 3
    assert "warning: line 4 is not an audit record" in err
