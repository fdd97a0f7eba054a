"""`bfm simulate` through ``failover.cli.main.run``: the report, exit codes, replays, and the
fencing switch that must make it fail.

Slow: each replay simulates the minimum 600 s (about 2-3 s of CPU) and the batch test two
such runs; the module makes six runs in all.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from failover.chaos.sim_faults import Fault
from failover.cli.main import run
from failover.cli.simulate import DISABLE_FENCING_ENV

REPORT_FIELDS = {
    "acked",
    "acked_lost",
    "duplicates_applied",
    "stale_epoch_accepts",
    "dual_owner_epochs",
    "max_unavailability_s",
    "unavailability_s",
    "shards_per_site",
    "faults",
    "violations",
}
BATCH_FIELDS = {
    "runs",
    "steps",
    "runs_per_fault_kind",
    "seed",
    "failures",
    "violations_by_invariant",
}
PARTITION_A = [Fault(30.0, "partition", "a", 20.0)]
BROKEN_SEED = 5


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data


def _bfm(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    code = run(["simulate", *argv])
    out, err = capsys.readouterr()
    return Result(code, out, err)


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _schedule_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "schedule.json", [f.to_json() for f in PARTITION_A])


def _assert_one_line_error(result: Result, *words: str) -> None:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("bfm: ")
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0]


# --- a batch --------------------------------------------------------------------------------


def test_a_batch_prints_the_report_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """Slow: two 600 s runs with random faults."""
    result = _bfm(capsys, "--runs", "2", "--jobs", "1", "--no-shrink", "--seed", "1", "--json")

    assert result.code == 0, result.err
    data = result.report()
    assert set(data) >= REPORT_FIELDS | BATCH_FIELDS
    assert data["runs"] == 2
    assert data["seed"] == 1
    assert data["failures"] == []
    assert data["violations"] == []
    assert data["violations_by_invariant"] == {}
    assert data["acked"] > 0
    assert data["steps"] > 0
    assert data["runs_per_fault_kind"]
    assert all(1 <= n <= 2 for n in data["runs_per_fault_kind"].values())
    assert "WARNING" not in result.err


# --- usage and input errors (exit 2) ------------------------------------------------------------


def test_a_run_shorter_than_ten_minutes_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = _bfm(capsys, "--duration", "5m", "--runs", "1", "--jobs", "1")

    assert result.code == 2
    assert result.out == ""
    _assert_one_line_error(result, "--duration 5m", "10 minutes")


def test_replaying_a_missing_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.json"

    result = _bfm(capsys, "--replay", str(missing))

    assert result.code == 2
    _assert_one_line_error(result, str(missing))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[{"at_s": 1', ["not valid JSON"]),
        ('{"faults": []}', ["JSON list of faults"]),
        ('[{"at_s": 1, "kind": "meteor", "target": "a", "duration_s": 1}]', ["meteor"]),
        ('[{"at_s": 1, "kind": "hang"}]', ["malformed fault"]),
    ],
    ids=["bad-json", "not-a-list", "unknown-kind", "missing-fields"],
)
def test_replaying_a_malformed_schedule_is_a_usage_error_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, words: list[str]
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")

    result = _bfm(capsys, "--replay", str(path), "--json")

    assert result.code == 2
    assert result.out == ""
    _assert_one_line_error(result, str(path), *words)


@pytest.mark.parametrize(
    "fault",
    [
        {"at_s": 10, "kind": "site_crash", "target": "x", "duration_s": 5},
        {"at_s": 10, "kind": "component_crash", "target": "a", "duration_s": 5},
    ],
    ids=["unknown-site", "component-without-site"],
)
def test_replaying_a_fault_with_a_bad_target_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fault: dict[str, Any]
) -> None:
    path = _write(tmp_path / "bad_target.json", [fault])

    result = _bfm(capsys, "--replay", str(path), "--json")

    assert result.code == 2
    _assert_one_line_error(result, str(path))


# --- replays: fencing on passes, fencing off is caught -------------------------------------------


def test_replaying_a_schedule_with_fencing_on_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow: one 600 s run."""
    monkeypatch.delenv(DISABLE_FENCING_ENV, raising=False)

    result = _bfm(capsys, "--replay", str(_schedule_file(tmp_path)), "--json")

    assert result.code == 0, result.err
    data = result.report()
    assert data["runs"] == 1
    assert data["violations"] == []
    assert data["fencing_enabled"] is True
    fault = PARTITION_A[0]
    assert data["faults"] == [
        {"at_s": fault.at_s, "kind": "partition", "target": "a", "action": "inject"},
        {
            "at_s": fault.at_s + fault.duration_s,
            "kind": "partition",
            "target": "a",
            "action": "heal",
        },
    ]
    assert "WARNING" not in result.err


@dataclass(frozen=True)
class Broken:
    result: Result
    entry: dict[str, Any]


def _bfm_captured(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(["simulate", *argv])
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broken]:
    """Slow: one 600 s run of a 20 s partition of a, with fencing switched off."""
    path = _schedule_file(tmp_path_factory.mktemp("broken"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DISABLE_FENCING_ENV, "1")
        result = _bfm_captured("--replay", str(path), "--seed", str(BROKEN_SEED), "--json")
    entries = json.loads(result.out)["failures"] if result.out else []
    yield Broken(result, entries[0] if entries else {})


def test_with_fencing_off_a_partition_fails_loudly(broken: Broken) -> None:
    result = broken.result

    assert result.code == 1
    assert f"WARNING: {DISABLE_FENCING_ENV}=1" in result.err
    assert "never run it in production" in result.err
    data = result.report()
    assert data["fencing_enabled"] is False
    assert data["violations"]
    assert data["stale_epoch_accepts"] > 0
    assert data["acked_lost"] > 0
    assert {"single_writer", "no_acked_loss"} <= set(data["violations_by_invariant"])
    assert result.err.strip().splitlines()[-1].startswith("bfm: 1 run(s) broke an invariant")


def test_the_failure_entry_names_its_batch_seed_run_and_schedule(broken: Broken) -> None:
    entry = broken.entry

    assert entry["batch_seed"] == BROKEN_SEED
    assert entry["run"] == 0
    assert entry["schedule"] == [f.to_json() for f in PARTITION_A]
    assert entry["violations"]


def _replay_entry(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    path: Path,
    entry: dict[str, Any],
) -> Result:
    monkeypatch.setenv(DISABLE_FENCING_ENV, "1")
    return _bfm(capsys, "--replay", str(_write(path, entry)), "--json")


def test_a_failure_entry_with_a_shrunk_schedule_replays_the_same_violations(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    broken: Broken,
) -> None:
    """Slow: one 600 s run.

    Shrinking re-runs the simulation dozens of times, too slow here; the entry's own
    schedule stands in for the shrunk one (it reproduces as well as any shrunk one must).
    """
    entry = {**broken.entry, "shrunk_schedule": broken.entry["schedule"]}

    # No --seed: the entry's batch_seed and run must give the run its seed.
    result = _replay_entry(capsys, monkeypatch, tmp_path / "entry.json", entry)

    assert result.code == 1
    assert result.report()["violations"] == broken.result.report()["violations"]


def test_a_failure_entry_as_printed_replays_the_same_violations(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    broken: Broken,
) -> None:
    result = _replay_entry(capsys, monkeypatch, tmp_path / "entry.json", broken.entry)

    assert result.code == 1, result.err
    assert result.report()["violations"] == broken.result.report()["violations"]
