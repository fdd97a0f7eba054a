"""The demo under its monitoring stack, with faults on a schedule: the dashboards' proof on
live data (tests/e2e/test_dashboards_live.py) and the README's picture.

``LiveDemo(work_dir).start()`` starts the alerting pipeline of ``AlertStack`` (Debian
Prometheus with the shipped scrape config, rules and exemplar storage; Alertmanager; the
node exporter), then ``bfm demo --headless --scenario site-return`` with the embedded log
store (site a killed with kill -9 5 s into the traffic, started again 10 s later).
``run_faults()`` follows site a's process; once it is back it adds two faults of its own:
kill -9 of b's ``eep`` process (its site restarts it) and a CPU hog in b's ``gsm``
process (``SIGUSR1``: ``failover.workload.cpu_hog``), then waits ``hog_s`` so that a
minute's rates see the hog. The demo (and the hog) still run when it returns, so queries
see a live system; ``stop()`` ends the demo with SIGINT, as Ctrl-C does, and the stack.
Every wait is bounded; times are wall clock (``time.time()``), comparable with query
timestamps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from failover.adapters.local_platform import read_instances
from failover.chaos.alerting import AlertStack
from failover.chaos.demo import HOG_ON, headless_command
from failover.chaos.logstore_process import URL_FILE

POLL_S = 0.2
STOP_TIMEOUT_S = 60.0
RETURN_CEILING_S = 150.0  # from the demo's start until a is back: only a hang takes longer
SETTLE_S = 3.0  # after a is back, before the extra faults
CRASHED = ("b", "eep")  # kill -9: its site restarts it
HOGGED = ("b", "gsm")  # SIGUSR1: a CPU hog in that process


class LiveDemoError(RuntimeError):
    """The demo ended early or a fault could not be injected (the sentence says which,
    with the end of the demo's output)."""


@dataclass
class Timeline:
    """When things happened, wall clock (unix seconds); 0 while not yet."""

    started_s: float = 0.0
    crash_seen_s: float = 0.0
    return_seen_s: float = 0.0
    component_killed_s: float = 0.0
    hog_started_s: float = 0.0
    pids: dict[str, int] = field(default_factory=dict)


class LiveDemo:
    """The demo, its monitoring stack and the extra faults (see the module's docstring)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        traffic_s: float = 240.0,
        rate_per_s: float = 150.0,
        shards: int = 4,
        hog_s: float = 40.0,
    ) -> None:
        self.work_dir = work_dir
        self.run_dir = work_dir / "run"
        self.report = work_dir / "report.json"
        self.log_path = work_dir / "demo.log"
        self.traffic_s, self.rate_per_s, self.shards = traffic_s, rate_per_s, shards
        self.hog_s = hog_s
        self.stack = AlertStack(self.run_dir)
        self.demo: subprocess.Popen[bytes] | None = None
        self.timeline = Timeline()

    def __enter__(self) -> LiveDemo:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def prometheus_url(self) -> str:
        return self.stack.prometheus_url

    @property
    def logstore_url(self) -> str:
        """The demo's log and trace store (it writes its URL once it listens)."""
        path = self.run_dir / URL_FILE
        return path.read_text(encoding="utf-8").strip() if path.exists() else ""

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.stack.start()
        env = {k: v for k, v in os.environ.items() if k != "BFM_TELEMETRY"}  # metrics on
        command = headless_command(
            "site-return",
            run_dir=self.run_dir,
            report=self.report,
            duration_s=self.traffic_s,
            rate_per_s=self.rate_per_s,
            shards=self.shards,
            logstore=True,
        )
        with self.log_path.open("wb") as log:
            self.demo = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.timeline.started_s = time.time()

    def run_faults(self) -> Timeline:
        """Wait (bounded) until site a crashed and came back, then kill b's eep and start
        the hog in b's gsm, and wait ``hog_s``; LiveDemoError if the demo ends first."""
        seen = self.timeline
        deadline = time.monotonic() + RETURN_CEILING_S
        first_pid: int | None = None
        while not seen.return_seen_s:
            self._check_running("waiting for site a to crash and return")
            if time.monotonic() > deadline:
                raise LiveDemoError(
                    f"site a did not crash and return within {RETURN_CEILING_S:g} s"
                    f"{self.output_tail()}"
                )
            pid = site_pid(self.run_dir, "a")
            if first_pid is None:
                first_pid = pid
            elif not seen.crash_seen_s and pid != first_pid:
                seen.crash_seen_s = time.time()
            if seen.crash_seen_s and pid is not None:
                seen.return_seen_s = time.time()
            time.sleep(POLL_S)
        time.sleep(SETTLE_S)
        seen.pids["crashed"] = self._signal(*CRASHED, signal.SIGKILL)
        seen.component_killed_s = time.time()
        seen.pids["hogged"] = self._signal(*HOGGED, HOG_ON)
        seen.hog_started_s = time.time()
        end = time.monotonic() + self.hog_s
        while time.monotonic() < end:
            self._check_running("the CPU hog ran")
            time.sleep(POLL_S)
        return seen

    def stop(self) -> None:
        """SIGINT to the demo (it stops every process and writes its report), then the
        stack; each by PID, each bounded."""
        demo, self.demo = self.demo, None
        if demo is not None:
            if demo.poll() is None:
                demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait(timeout=STOP_TIMEOUT_S)
        self.stack.stop()

    def output_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace")[-chars:]
            return f"; the demo's output ends:\n{tail}"
        return ""

    def _check_running(self, doing: str) -> None:
        if self.demo is None or self.demo.poll() is not None:
            code = None if self.demo is None else self.demo.returncode
            raise LiveDemoError(f"the demo ended (exit {code}) while {doing}{self.output_tail()}")

    def _signal(self, site: str, component: str, signum: int) -> int:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            entry = read_instances(self.run_dir, site).get(component) or {}
            pid = entry.get("pid")
            if entry.get("state") == "running" and isinstance(pid, int) and self._is(pid, site):
                os.kill(pid, signum)
                return pid
            time.sleep(POLL_S)
        raise LiveDemoError(f"no running {component} at site {site}{self.output_tail()}")

    def _is(self, pid: int, site: str) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return {f"--site={site}".encode(), f"--run-dir={self.run_dir}".encode()} <= set(cmdline)


def site_pid(run_dir: Path, site: str) -> int | None:
    """The PID of the ``bfm site run --site=<site>`` process of ``run_dir``, if one runs."""
    wanted = {b"site", b"run", f"--site={site}".encode(), f"--run-dir={run_dir}".encode()}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and wanted <= set((proc / "cmdline").read_bytes().split(b"\0")):
                return int(proc.name)
    return None
