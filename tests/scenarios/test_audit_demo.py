"""The audit trail of a real demo run: `bfm audit verify` passes on it, and fails on a copy
with one flipped byte and on one with its last record cut off (issue 11, "Done when").

The site processes (`bfm site run --run-dir`) audit their controller's decisions into the
run directory's audit.log and anchor its head in the run's sqlite store; an operator
command run afterwards appends to the same log. Every check is the real `bfm` CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from demo_runs import run_demo

pytestmark = pytest.mark.scenario


def bfm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "failover", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_verify_passes_on_a_demo_run_and_fails_on_a_flipped_byte_or_a_cut_record(
    tmp_path: Path,
) -> None:
    done, _ = run_demo(tmp_path, "switchover", duration_s=20, rate=100, shards=4)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "run"
    log = run_dir / "audit.log"

    operator = bfm("rebalance", f"--run-dir={run_dir}", "--reason=audit demo")
    assert operator.returncode == 0, operator.stderr

    shown = bfm("audit", "show", f"--run-dir={run_dir}", "--json")
    assert shown.returncode == 0, shown.stderr
    records = json.loads(shown.stdout)
    actions = {r["action"] for r in records}
    assert {"decision.initial", "decision.drain", "decision.transfer"} <= actions, actions
    # the demo's own operator steps (switchover, then rebalance 10 s later) are audited too
    (switchover,) = [r for r in records if r["action"] == "switchover"]
    assert switchover["who"].startswith("bfm demo") and switchover["why"] == "scenario switchover"
    switched = [
        r
        for r in records
        if r["action"] == "decision.transfer" and r["after"]["component"] == "eap"
    ]
    assert switched, [r["what"] for r in records]  # the switchover's moves of eap to b
    decision = switched[0]
    assert decision["who"].startswith("controller@") and len(decision["trace_id"]) == 32
    assert decision["before"]["component"] == "eap" and decision["why"]
    last = records[-1]
    assert (last["action"], last["why"]) == ("rebalance", "audit demo")
    assert "@" in last["who"] and not last["who"].startswith("controller@")

    intact = bfm("audit", "verify", f"--run-dir={run_dir}")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert f"intact: {len(records)} record(s), head at record {len(records)}" in intact.stdout

    # One bit of one letter of a middle record's "what": still valid JSON, still a
    # well-formed record; only its hash can tell.
    data = log.read_bytes()
    seq = len(records) // 2
    at = data.index(b'"what":"', sum(len(r) for r in data.splitlines(keepends=True)[: seq - 1]))
    at += len(b'"what":"')
    flipped = tmp_path / "flipped.log"
    flipped.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])
    found = bfm("audit", "verify", f"--run-dir={run_dir}", f"--audit-log={flipped}")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "TAMPERED: 1 finding(s)" in found.stdout
    assert f"record {seq}: edited: its content does not match its hash" in found.stdout

    cut = tmp_path / "cut.log"
    cut.write_bytes(b"".join(data.splitlines(keepends=True)[:-1]))
    found = bfm("audit", "verify", f"--run-dir={run_dir}", f"--audit-log={cut}")
    assert found.returncode == 1, found.stdout + found.stderr
    assert (
        f"the log ends at record {len(records) - 1} but the store's head is at record "
        f"{len(records)}"
    ) in found.stdout

    assert bfm("audit", "verify", f"--run-dir={run_dir}").returncode == 0  # the original
