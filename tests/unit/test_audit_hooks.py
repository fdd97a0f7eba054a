"""Real actions leave audit records with who, what, why, before/after and the trace id:
operator commands (drain, refused drains, updates, licenses), ``admin`` called directly
inside a span, and the controller's committed decisions."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from small_system import SmallSystem
from support.loki_receiver import LokiReceiver
from test_cli_operate import System as OperatedSystem
from test_cli_update import RELEASE
from test_cli_update import System as UpdatedSystem

from failover.adapters.fake_clock import FakeClock
from failover.adapters.store_url import open_store
from failover.cli.errors import UsageError
from failover.cli.main import run
from failover.cli.operate import operator_audit
from failover.core.controller import PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.fencing import Ownership
from failover.runtime import admin
from failover.runtime.audit_log import (
    AUDIT_LOG_ENV,
    AuditTrail,
    operator_identity,
    read_head,
    read_records,
    verify_log,
)
from failover.runtime.controller import ControllerRuntime
from failover.runtime.documents import ADMIN_POLICY_KEY, ownership_key


def bfm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def records(path: Path) -> list[Any]:
    found = list(read_records(path))
    assert not any(isinstance(r, tuple) for r in found), found
    return found


@pytest.fixture
def operated(tmp_path: Path) -> Iterator[OperatedSystem]:
    running = OperatedSystem(tmp_path / "bfm.db")
    yield running
    running.store.close()


def test_a_drain_on_the_command_line_is_audited(
    operated: OperatedSystem, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bfm(capsys, "drain", "a", f"--store={operated.url}", "--reason", "update a")
    assert (code, err) == (0, "")
    code, _, err = bfm(capsys, "drain", "b", f"--store={operated.url}", "--reason", "oops")
    assert code == 1 and "cannot drain b" in err
    drained, refused = records(tmp_path / "audit.log")
    assert drained.who == operator_identity() and "@" in drained.who
    assert (drained.action, drained.outcome, drained.why) == ("drain", "done", "update a")
    assert drained.what == "drain a: site a drained"
    assert drained.before["drained_sites"] == [] and drained.after["drained_sites"] == ["a"]
    assert drained.after["changed_by"] == drained.who
    assert drained.trace_id == ""  # no span in a plain command
    assert (refused.action, refused.outcome, refused.why) == ("drain", "refused", "oops")
    assert "cannot drain b: it is the last worker site that could serve" in refused.what
    head = read_head(operated.store)
    assert head is not None and head.seq == 2
    assert verify_log(tmp_path / "audit.log", head).intact
    code, out, _ = bfm(capsys, "audit", "verify", f"--store={operated.url}")
    assert code == 0 and "intact: 2 record(s)" in out  # the log found beside the sqlite store


def test_an_operators_audit_record_reaches_loki_too(
    operated: OperatedSystem,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a Loki named (BFM_LOKI_URL), the command ships its audit record there as
    well (a real HTTP receiver decoding Loki's push format)."""
    audit_logger = logging.getLogger("bfm.audit")
    before, level = list(audit_logger.handlers), audit_logger.level
    with LokiReceiver() as loki:
        monkeypatch.setenv("BFM_LOKI_URL", loki.url)
        try:
            code, _, err = bfm(capsys, "drain", "a", f"--store={operated.url}", "--reason", "x")
            assert (code, err) == (0, "")
            entries = loki.wait_for(lambda got: len(got) >= 1, 10.0)
        finally:
            for handler in set(audit_logger.handlers) - set(before):
                audit_logger.removeHandler(handler)
                handler.close()
            audit_logger.setLevel(level)
    (line,) = [json.loads(e.line) for e in entries]
    assert (line["event"], line["action"], line["why"]) == ("audit", "drain", "x")
    assert entries[0].labels["component"] == "bfm-cli"


def test_no_change_is_made_that_could_not_be_audited(
    operated: OperatedSystem,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(AUDIT_LOG_ENV, str(tmp_path / "missing" / "audit.log"))
    code, _, err = bfm(capsys, "drain", "a", f"--store={operated.url}")
    assert code == 1
    assert "cannot open the audit log" in err and "nothing was changed" in err
    assert operated.store.get(ADMIN_POLICY_KEY) is None


def test_an_action_without_an_audit_log_is_refused() -> None:
    class Etcd:
        url = "etcd://10.0.0.1:2379"

    with pytest.raises(UsageError, match="no audit log for the store etcd://"):
        operator_audit(None, Etcd())  # type: ignore[arg-type]


def test_admin_called_in_a_span_records_its_trace_id(
    operated: OperatedSystem, tmp_path: Path
) -> None:
    trail = AuditTrail(tmp_path / "mine.log", operated.store, who="ops@box", clock=FakeClock())
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("operator") as span:
        admin.switchover(
            operated.store,
            "eap",
            "b",
            topology=operated.controller.topology,
            clock=operated.clock,
            reason="maintenance",
            audit=trail,
        )
    [record] = records(tmp_path / "mine.log")
    assert record.trace_id == f"{span.get_span_context().trace_id:032x}"
    assert (record.who, record.action, record.why) == ("ops@box", "switchover", "maintenance")
    assert record.before["pinned"] == {} and record.after["pinned"] == {"eap": "b"}


def test_committed_decisions_are_audited_by_the_controller(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'bfm.db'}")
    system = SmallSystem(store, FakeClock())
    system.controller = ControllerRuntime(
        "w",
        store=store,
        clock=system.clock,
        topology=system.topology,
        timing=system.timing,
        detector=DetectorTiming(),
        policy=PlacementPolicy(),
        audit_log=tmp_path / "audit.log",
    )
    system.run(30)
    initial = records(tmp_path / "audit.log")
    assert {r.action for r in initial} == {"decision.initial"}
    assert len(initial) == len(system.topology.components)
    for _ in range(150):  # site b stops renewing: its shards fail over to a
        system.agents["a"].renew()
        system.agents["a"].poll()
        system.controller.tick()
        system.clock.advance(0.1)
    failovers = [r for r in records(tmp_path / "audit.log") if r.action == "decision.failover"]
    assert {r.after["component"] for r in failovers} == set(system.topology.components)
    eap = next(r for r in failovers if r.after["component"] == "eap")
    assert eap.who == "controller@w" and eap.outcome == "done"
    assert eap.what.startswith("failover eap shards [")
    assert "b" in eap.why and eap.why  # the decision's reason names the failed site
    owners_before = {s["owner"] for s in eap.before["shards"]}
    assert owners_before == {"a", "b"}
    assert {s["owner"] for s in eap.after["shards"]} == {"a"}
    got = store.get(ownership_key("eap"))
    assert got is not None
    assert eap.trace_id == Ownership.from_doc(got.value).trace_id and len(eap.trace_id) == 32
    head = read_head(store)
    assert head is not None and verify_log(tmp_path / "audit.log", head).intact
    assert system.controller.audit_error == ""
    store.close()


def test_update_begin_and_abort_on_the_command_line_are_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    system = UpdatedSystem(tmp_path / "bfm.db")
    release = tmp_path / "release.yaml"
    release.write_text(RELEASE)
    try:
        bfm(capsys, "update", "apply", str(release), "--no-wait", f"--store={system.url}")
        system.run(3.0)
        code, _, _ = bfm(capsys, "update", "abort", f"--store={system.url}")
        assert code == 0
        begun, aborted = records(tmp_path / "audit.log")
        assert (begun.action, begun.outcome) == ("update.begin", "done")
        assert begun.what.startswith("update to release 2.0 (")
        assert begun.before is None and begun.after["release"] == "2.0"
        assert (aborted.action, aborted.outcome) == ("update.abort", "done")
        assert aborted.before["release"] == "2.0" and aborted.after["mode"] == "abort"
        assert aborted.before["mode"] == "update"
        assert verify_log(tmp_path / "audit.log", read_head(system.store)).intact
    finally:
        system.store.close()


def test_a_license_issued_is_audited_without_key_material(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    keys = tmp_path / "keys"
    code, _, err = bfm(capsys, "license", "keygen", f"--out={keys}", f"--run-dir={run_dir}")
    assert code == 0
    assert "not anchored" in err  # no store in this run directory: kept, and said so
    code, _, _ = bfm(
        capsys,
        *("license", "issue", f"--key={keys / 'signing.key'}", "--system-id=sys-9"),
        *(f"--out={tmp_path / 'a.license'}", f"--run-dir={run_dir}", "--reason=lab"),
    )
    assert code == 0
    keygen, issued = records(run_dir / "audit.log")
    assert keygen.action == "license.keygen" and len(keygen.after["public_key_sha256"]) == 64
    assert (issued.action, issued.why) == ("license.issue", "lab")
    assert issued.after["system_id"] == "sys-9" and issued.after["dongle_serial"]
    text = (run_dir / "audit.log").read_text()
    secret = (keys / "signing.key").read_text().strip().splitlines()[1]
    assert secret not in text and "signature" not in text
    license_doc = json.loads((tmp_path / "a.license").read_text())
    assert license_doc.get("signature", "x") not in text


def test_keys_made_outside_any_system_say_they_are_not_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(AUDIT_LOG_ENV, raising=False)
    monkeypatch.delenv("BFM_STORE", raising=False)
    code, _, err = bfm(capsys, "license", "keygen", f"--out={tmp_path}")
    assert code == 0 and "warning: not audited: no audit log named" in err


def test_wall_time_of_records_is_the_clocks(operated: OperatedSystem, tmp_path: Path) -> None:
    """Records are stamped by the injected clock, not the process's."""
    clock = FakeClock(start_wall_s=1_000_000.0)
    trail = AuditTrail(tmp_path / "t.log", operated.store, who="x", clock=clock)
    trail.record("rebalance", "rebalance")
    [record] = records(tmp_path / "t.log")
    assert record.at_wall_s == 1_000_000.0 and time.time() > 1_000_000.0
