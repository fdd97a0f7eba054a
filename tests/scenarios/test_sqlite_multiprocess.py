"""Scenario: the sqlite store shared by real processes (no lost update, survives SIGKILL).

Children run ``sqlite_store_child.py`` beside this file with the same interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from types import ModuleType

import pytest

from failover.adapters.sqlite_store import SqliteStore

pytestmark = pytest.mark.scenario

CHILD_SCRIPT = Path(__file__).with_name("sqlite_store_child.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 60.0  # a ceiling that catches hangs, many times the normal run time


def _load_child_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sqlite_store_child", CHILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


child = _load_child_module()


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, str(CHILD_SCRIPT), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


def test_four_processes_incrementing_one_counter_lose_no_update(tmp_path: Path) -> None:
    processes, increments = 4, 50
    db_path = tmp_path / "bfm.db"
    store = SqliteStore(db_path)
    store.create("counter", {"count": 0})

    children = [
        _spawn("increment", str(db_path), "counter", str(increments)) for _ in range(processes)
    ]
    for proc in children:  # all are ready before any starts, so they really contend
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in children:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    committed: list[int] = []
    conflicts = 0
    for proc in children:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
        assert proc.returncode == 0, err
        *values, last = out.splitlines()
        committed.extend(int(value) for value in values)
        conflicts += int(last.removeprefix("conflicts "))

    total = processes * increments
    assert sorted(committed) == list(range(1, total + 1))  # each value won by exactly one
    assert conflicts > 0, "the processes never contended, so the test proved nothing"
    final = store.get("counter")
    assert final is not None
    assert final.value == {"count": total}
    store.close()


def _read_lines(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)
    lines.put(None)


@pytest.mark.parametrize("commits_before_kill", [1, 25, 150])
def test_writer_killed_mid_write_leaves_a_committed_document(
    tmp_path: Path, commits_before_kill: int
) -> None:
    db_path = tmp_path / "bfm.db"
    store = SqliteStore(db_path)
    store.create("doc", {"n": 0, "pad": child.padding(0)})
    store.close()

    proc = _spawn("write-loop", str(db_path), "doc")
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    printed: list[int] = []
    deadline_s = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while len(printed) < commits_before_kill:
            line = lines.get(timeout=max(deadline_s - time.monotonic(), 0.01))
            assert line is not None, (
                f"the writer exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
            printed.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=CHILD_TIMEOUT_S)
    reader.join(timeout=CHILD_TIMEOUT_S)
    while (line := lines.get_nowait()) is not None:
        if line.endswith("\n"):  # a line cut by the kill is not a claim of a commit
            printed.append(int(line))
    assert proc.returncode == -signal.SIGKILL

    reopened = SqliteStore(db_path)
    doc = reopened.get("doc")
    assert doc is not None
    n = doc.value["n"]
    # Every printed value was committed first; the write after the last print may also
    # have committed before the kill, but nothing beyond it can exist.
    assert printed == list(range(1, len(printed) + 1))
    assert n in (printed[-1], printed[-1] + 1)
    assert doc.value == {"n": n, "pad": child.padding(n)}
    assert reopened.compare_and_set("doc", {"n": n + 1, "pad": ""}, expected_revision=doc.revision)
    reopened.close()
    with closing(sqlite3.connect(db_path)) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
