"""Start and stop the processes of a three-site run on this machine (tests, demo, benchmarks).

Every process is a real ``python -m failover`` subprocess; the launcher remembers each by
its PID, writes each one's stderr to ``<run_dir>/<name>.log``, and ends only those.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from failover.core.topology import Topology
from failover.workload.endpoints import Endpoints, allocate


class Launcher:
    def __init__(
        self, run_dir: Path, topology: Topology, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.run_dir, self.topology = run_dir, topology
        self.env = {**os.environ, **(env or {})}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.endpoints: Endpoints | None = None

    def prepare(self) -> Endpoints:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.endpoints = allocate(f"sqlite://{self.run_dir / 'bfm.db'}", self.topology)
        self.endpoints.save(self.run_dir)
        return self.endpoints

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.run_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                [sys.executable, "-m", "failover", *args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )

    def start_site(self, site: str) -> None:
        """The site's BFM process and, for a worker site, every component process."""
        self._spawn(f"site-{site}", ["site", "run", f"--site={site}", f"--run-dir={self.run_dir}"])
        if self.topology.is_worker(site):
            for c in self.topology.components:
                self.start_component(site, c)

    def start_component(self, site: str, component: str) -> None:
        args = [
            "component",
            "run",
            f"--site={site}",
            f"--component={component}",
            f"--run-dir={self.run_dir}",
        ]
        self._spawn(f"comp-{site}-{component}", args)

    def names_of(self, site: str) -> list[str]:
        return [n for n in self.procs if n == f"site-{site}" or n.startswith(f"comp-{site}-")]

    def signal(self, name: str, signum: int) -> None:
        os.kill(self.procs[name].pid, signum)

    def kill_site(self, site: str) -> None:
        """kill -9 every process of a site."""
        for name in self.names_of(site):
            proc = self.procs.pop(name)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """SIGTERM to all, then SIGKILL to any still running after ``timeout_s``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(timeout=timeout_s)
        self.procs.clear()
        return codes


def wait_until(
    check: Callable[[], bool], what: str, *, ceiling_s: float, poll_s: float = 0.1
) -> float:
    """Seconds until ``check()`` held; AssertionError naming ``what`` after ``ceiling_s``."""
    start = time.monotonic()
    while time.monotonic() - start < ceiling_s:
        if check():
            return time.monotonic() - start
        time.sleep(poll_s)
    raise AssertionError(f"not within {ceiling_s} s: {what}")
