"""Start and stop the processes of a three-site run on this machine (tests, demo, benchmarks).

The launcher starts one real ``python -m failover site run`` subprocess per site,
remembers each by its PID, writes its stderr to ``<run_dir>/site-<site>.log``, and ends
only those. A worker site's process starts and supervises its own components through the
local platform (``failover.adapters.local_platform``), which records their PIDs in
``<run_dir>/instances-<site>.json``; the launcher reads them there to pause or kill a
component, and a component dies with its site process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from failover.adapters.local_platform import child_setup, read_instances
from failover.core.topology import Topology
from failover.runtime.site_versions import EXIT_REBOOT
from failover.workload.endpoints import Endpoints, allocate, allocate_per_site


class Launcher:
    def __init__(
        self,
        run_dir: Path,
        topology: Topology,
        *,
        env: Mapping[str, str] | None = None,
        argv_prefix: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        """``argv_prefix(site)`` is put before each site's command (e.g. ``ip netns exec
        <ns>`` for a site in a network namespace of its own; it must exec in place, so the
        PID stays the site process's)."""
        self.run_dir, self.topology = run_dir, topology
        self.env = {**os.environ, **(env or {})}
        self._argv_prefix = argv_prefix or (lambda _site: ())
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # "site-<site>" -> its process
        self.endpoints: Endpoints | None = None

    def prepare(
        self, store_url: str | None = None, *, hosts: dict[str, str] | None = None
    ) -> Endpoints:
        """Every address of the run, with its store (default: ``bfm.db`` in the run dir):
        free ports on 127.0.0.1, or fixed ports on each site's own address in ``hosts``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        url = store_url or f"sqlite://{self.run_dir / 'bfm.db'}"
        if hosts is None:
            self.endpoints = allocate(url, self.topology)
        else:
            self.endpoints = allocate_per_site(url, self.topology, hosts)
        self.endpoints.save(self.run_dir)
        return self.endpoints

    def start_site(self, site: str) -> None:
        """The site's BFM process; a worker site's process starts its components itself."""
        name = f"site-{site}"
        with (self.run_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                [
                    *self._argv_prefix(site),
                    sys.executable,
                    "-m",
                    "failover",
                    "site",
                    "run",
                    f"--site={site}",
                    f"--run-dir={self.run_dir}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
                preexec_fn=child_setup(),  # noqa: PLW1509 - the run dies with its launcher
            )

    def restart_rebooted(self) -> list[str]:
        """Start again every site process that ended with ``EXIT_REBOOT`` (an OS update
        took it down: the "machine" comes back up); the sites restarted."""
        restarted = []
        for site in self.topology.site_names:
            proc = self.procs.get(f"site-{site}")
            if proc is not None and proc.poll() == EXIT_REBOOT:
                self.start_site(site)
                restarted.append(site)
        return restarted

    def site_pid(self, site: str) -> int | None:
        proc = self.procs.get(f"site-{site}")
        return proc.pid if proc is not None and proc.poll() is None else None

    def signal_site(self, site: str, signum: int) -> int:
        """Send ``signum`` to the site's own process (not its components); returns its PID."""
        pid = self.site_pid(site)
        if pid is None:
            raise RuntimeError(f"site {site}'s process is not running in {self.run_dir}")
        os.kill(pid, signum)
        return pid

    def component_pid(self, site: str, component: str) -> int | None:
        """The PID of the site's running instance of ``component``, from its instances file."""
        try:
            entry = read_instances(self.run_dir, site).get(component)
        except ValueError:
            return None
        if not entry or entry.get("state") != "running" or not isinstance(entry.get("pid"), int):
            return None
        pid = int(entry["pid"])
        return pid if self._is_component(pid, site, component) else None

    def component_pids(self, site: str) -> list[int]:
        """The PIDs of the site's running component instances (each looked up once)."""
        pids = (self.component_pid(site, c) for c in self.topology.components)
        return [pid for pid in pids if pid is not None]

    def components_running(self, site: str) -> bool:
        """Every component of a worker site runs (as its instances file says)."""
        return all(self.component_pid(site, c) is not None for c in self.topology.components)

    def signal_component(self, site: str, component: str, signum: int) -> int:
        """Send ``signum`` to the component's process; returns its PID."""
        pid = self.component_pid(site, component)
        if pid is None:
            raise RuntimeError(f"no running {component} at site {site} in {self.run_dir}")
        os.kill(pid, signum)
        return pid

    @staticmethod
    def signal_pids(pids: Sequence[int], signum: int) -> None:
        """Send ``signum`` to each PID that still exists (e.g. SIGCONT to what was paused)."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill_site(self, site: str) -> None:
        """kill -9 the site's process and every component of it, all at once."""
        pids = self.component_pids(site)
        proc = self.procs.pop(f"site-{site}", None)
        if proc is not None:
            proc.kill()
        self.signal_pids(pids, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)

    def resume_all(self) -> None:
        """SIGCONT every process of the run (a paused one would never see SIGTERM)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        for site in self.topology.workers:
            self.signal_pids(self.component_pids(site), signal.SIGCONT)

    def stop(self, timeout_s: float = 15.0) -> dict[str, int]:
        """SIGTERM to every site process (each stops its components first), then SIGKILL to
        any still running after ``timeout_s``; their components die with them."""
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

    def _is_component(self, pid: int, site: str, component: str) -> bool:
        """The PID is still that component of this run (PIDs are reused after an exit)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        wanted = {
            f"--site={site}".encode(),
            f"--component={component}".encode(),
            f"--run-dir={self.run_dir}".encode(),
        }
        return wanted <= set(cmdline)


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
