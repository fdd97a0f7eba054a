"""Process plumbing for the Sentinel baseline: bounded waits, ending a process by PID,
log tails for error messages and the handle of a running writer."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_INTERVAL_S = 0.2
TAIL_LINES = 12
KILL_WAIT_S = 5.0


class SentinelError(Exception):
    """The Sentinel baseline could not be started or observed."""


def tail(paths: Iterable[Path], lines: int = TAIL_LINES) -> str:
    """The last lines of each file, headed by its path (for error messages)."""
    parts: list[str] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError as exc:
            text = [f"(unreadable: {exc})"]
        parts.append(f"--- {path} (last {lines} lines)\n" + "\n".join(text))
    return "\n".join(parts)


def wait_until(
    what: str,
    problem: Callable[[], str | None],
    timeout_s: float,
    logs: Callable[[], Sequence[Path]],
) -> float:
    """Poll ``problem`` (None: done; else what is still wrong) until done, at most
    ``timeout_s`` and a bounded number of times; returns the wall time it was done."""
    deadline = time.monotonic() + timeout_s
    last = "never checked"
    for _ in range(int(timeout_s / POLL_INTERVAL_S) + 2):
        found = problem()
        if found is None:
            return time.time()
        last = found
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    raise SentinelError(
        f"Sentinel baseline: {what} not reached within {timeout_s} s; last seen: {last}. "
        f"Check the logs below (a port in use, a config error, a host without network "
        f"namespaces) and the run directory.\n{tail(logs())}"
    )


def end_process(proc: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """End a process this harness started, by its PID: SIGCONT (a paused process cannot
    act on SIGTERM), SIGTERM, then SIGKILL after ``grace_s``; always reaped."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=KILL_WAIT_S)
    except ProcessLookupError:
        proc.wait(timeout=KILL_WAIT_S)


@dataclass
class WriterRun:
    """A writer process running in namespace c (``failover.chaos.sentinel_writer``)."""

    proc: subprocess.Popen[bytes]
    history_path: Path
    stderr_path: Path

    def acked_clients(self) -> set[str]:
        clients: set[str] = set()
        for line in self.history_path.read_text(encoding="utf-8").splitlines():
            if '"op":"ack"' in line:
                try:
                    clients.add(str(json.loads(line).get("client")))
                except json.JSONDecodeError:
                    continue
        return clients

    def wait_acked(self, clients: Sequence[str], *, timeout_s: float) -> None:
        """Wait until each client has had one write acknowledged."""

        def problem() -> str | None:
            if self.proc.poll() is not None:
                raise SentinelError(
                    f"the writer exited with status {self.proc.returncode} before writing; "
                    f"is redis-py installed (pip install 'redis>=5.0')?\n"
                    f"{tail([self.stderr_path])}"
                )
            missing = sorted(set(clients) - self.acked_clients())
            return f"no acknowledged write yet from {missing}" if missing else None

        wait_until("every writer acknowledged", problem, timeout_s, lambda: [self.stderr_path])

    def wait(self, timeout_s: float) -> bool:
        """Wait for the writer to end by itself (its duration); True when it has."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, *, timeout_s: float) -> None:
        """End the writer early; it flushes its history on SIGTERM."""
        end_process(self.proc, grace_s=timeout_s)
