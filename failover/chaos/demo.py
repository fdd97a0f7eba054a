"""`bfm demo` without the screen: start the three sites, the backbone and a producer, inject
one scenario's faults on schedule, and judge the run at the end.

Scenarios (seconds after the traffic starts, ``FAULT_AT_S``):

- ``component-crash``: kill -9 site a's EAP module; its site's supervisor starts it again
  (the heal is recorded when it runs again);
- ``component-pause``: SIGSTOP a's EAP module past its lease, SIGCONT 4 s later;
- ``site-crash``: kill -9 every process of site a; a stays down;
- ``site-return``: site-crash, then a comes back 10 s later and work is handed back;
- ``leader-crash``: kill -9 the leading controller's site process, restarted 5 s later
  (normally the witness's: worker sites' replicas leave the lease to it at start; were
  it a worker's, its components would die with it, as a node's pods do);
- ``switchover``: the operator switches EAP over to site b (``bfm switchover eap --to b``),
  and 10 s later rebalances (``bfm rebalance``): planned moves, drain -> fence -> transfer;
- ``drain``: the operator drains site a (``bfm drain a``), and undrains it 10 s later.
- ``rolling-update``: a full release (every component at both worker sites, the OS and
  cluster of every site) applied as ``bfm update apply`` does; healed when it ends;
- ``bad-update``: a release whose EAP fails after readiness: the gate rolls site a back
  (``failover.chaos.demo_update``);
- ``update-leader-crash``: the components updated, and 15 s in the leading controller's
  site process is killed (kill -9) and restarted 5 s later: the next leader resumes it.

Each worker site's process starts and supervises its own components (the local platform);
the demo finds their PIDs in ``<run_dir>/instances-<site>.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover.adapters.etcd_cluster import EtcdCluster
from failover.adapters.store_url import open_store
from failover.adapters.system_clock import SystemClock
from failover.adapters.tls_dev import tls_env, write_dev_pki
from failover.chaos import demo_license, demo_update
from failover.chaos.demo_license import LICENSE_SCENARIOS, LicenseScenario, LicenseWatch
from failover.chaos.demo_update import UPDATE_SCENARIOS
from failover.chaos.logstore_process import LogStoreProcess
from failover.chaos.report import FaultEvent
from failover.chaos.run_check import final_shards
from failover.chaos.schedule import Step, run_due
from failover.core.topology import Topology
from failover.ports import CoordinationStore
from failover.runtime import admin
from failover.runtime.audit_log import AUDIT_FILE, AuditTrail, operator_identity
from failover.runtime.documents import LEADER_KEY
from failover.workload.endpoints import Endpoints
from failover.workload.launcher import Launcher

FAULT_AT_S = 5.0
CPU_HOG_S = 30.0
HOG_ON, HOG_OFF = signal.SIGUSR1, signal.SIGUSR2  # failover.workload.cpu_hog
LICENSE_WATCH_EVERY_S = 0.5
OTLP_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SCENARIOS = (
    "none",
    "component-crash",
    "component-pause",
    "cpu-hog",
    "site-crash",
    "site-return",
    "leader-crash",
    "switchover",
    "drain",
    *UPDATE_SCENARIOS,
    *LICENSE_SCENARIOS,
)


@dataclass
class Demo:
    run_dir: Path
    topology: Topology
    rate_per_s: float
    duration_s: float
    scenario: str = "none"
    env: dict[str, str] = field(default_factory=dict)
    store: str = "sqlite"  # sqlite (a file in the run dir), etcd (a local cluster), or a URL
    mix: str = "uniform"  # the producer's kinds of message (failover.workload.producer.MIXES)
    logstore: bool = True  # run the embedded log and trace store and ship to it
    settle_s: float | None = None  # end the traffic this long after the last step ran
    tls: bool = False  # every backbone connection over TLS, with a development PKI

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; known: {', '.join(SCENARIOS)}")
        if self.store.startswith("memory:"):
            raise ValueError(
                "--store memory:// lives in one process; the demo's sites are processes of "
                "their own: use sqlite, etcd or a sqlite://, etcd:// or kubernetes:// URL"
            )
        self.etcd: EtcdCluster | None = None
        self._store: CoordinationStore | None = None
        self.launcher = Launcher(self.run_dir, self.topology, env=self.env)
        self.producer: subprocess.Popen[str] | None = None
        self.faults: list[FaultEvent] = []
        self.steps: list[Step] = []
        self.started_s = 0.0
        self._leader = "w"
        self._eap_pid: int | None = None
        self.shards_at_end: dict[str, dict[str, int]] | None = None
        self.logs: LogStoreProcess | None = None
        self.license_watch: LicenseWatch | None = None
        self._license_seen_s = 0.0
        self._finishing = False

    @property
    def stats_file(self) -> Path:
        return self.run_dir / "producer-stats.json"

    @property
    def store_url(self) -> str:
        if self.store == "sqlite":
            return f"sqlite://{self.run_dir / 'bfm.db'}"
        if self.store == "etcd":
            if self.etcd is None:
                raise RuntimeError("the demo's etcd cluster runs only after start()")
            return self.etcd.url
        return self.store

    def coordination(self) -> CoordinationStore:
        """The run's store, opened once (the view and the scenario steps read it)."""
        if self._store is None:
            self._store = open_store(self.store_url)
        return self._store

    def start(self) -> None:
        """The store (a local etcd cluster for ``etcd``), then every site process; each
        worker site's process starts its own components."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            tls = tls_env(write_dev_pki(self.run_dir / "tls"))  # before any process starts
            self.env.update(tls)
            self.launcher.env.update(tls)
        if self.logstore:
            self._start_logstore()
        if self.store == "etcd":
            self.etcd = EtcdCluster(self.run_dir / "etcd")
            self.etcd.start()
        self.launcher.prepare(self.store_url)
        self.license = demo_license.set_up(self.run_dir, self.topology, self.scenario)
        write_scrape_config(self.run_dir)
        for site in self.topology.site_names:
            self.launcher.start_site(site)

    def _start_logstore(self) -> None:
        """Every process ships its logs, and its spans unless a collector was named, to the
        run's own store (``bfm logs``, ``bfm trace``)."""
        self.logs = LogStoreProcess(self.run_dir)
        url = self.logs.start()
        shipping = {"BFM_LOKI_URL": url}
        named = self.env.get(OTLP_ENV) or os.environ.get(OTLP_ENV)
        if not named:
            shipping[OTLP_ENV] = url
        self.env.update(shipping)
        self.launcher.env.update(shipping)

    @property
    def logstore_url(self) -> str:
        return self.logs.url if self.logs is not None else ""

    def start_traffic(self) -> None:
        # Its log lines go to a file: a pipe nobody reads until the end fills up (64 KiB:
        # a burst's "delayed" lines) and blocks the producer mid-run.
        with (self.run_dir / "producer.log").open("ab") as log:
            self.producer = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "failover",
                    "produce",
                    f"--run-dir={self.run_dir}",
                    f"--rate={self.rate_per_s}",
                    f"--duration={self.duration_s}s",
                    "--site=a",
                    f"--mix={self.mix}",
                    f"--stats-file={self.stats_file}",
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **self.env},
            )
        self.started_s = time.monotonic()
        self.steps = self._plan()

    def _plan(self) -> list[Step]:
        l = self.launcher  # noqa: E741
        at = FAULT_AT_S
        if self.scenario == "component-crash":
            return [
                Step(at, "component_crash", "a/eap", "inject", self._kill_eap),
                # no action: the supervisor restarts it; the heal is when it runs again
                Step(at, "component_crash", "a/eap", "heal", lambda: None, self._eap_replaced),
            ]
        if self.scenario == "component-pause":
            return [
                Step(
                    at,
                    "component_pause",
                    "a/eap",
                    "inject",
                    lambda: self._signal_eap(signal.SIGSTOP),
                ),
                Step(
                    at + 4,
                    "component_pause",
                    "a/eap",
                    "heal",
                    lambda: self._signal_eap(signal.SIGCONT),
                ),
            ]
        if self.scenario == "cpu-hog":
            return [
                Step(at, "cpu_hog", "b/gsm", "inject", lambda: self._signal("b", "gsm", HOG_ON)),
                Step(
                    at + CPU_HOG_S,
                    "cpu_hog",
                    "b/gsm",
                    "heal",
                    lambda: self._signal("b", "gsm", HOG_OFF),
                ),
            ]
        if self.scenario in ("site-crash", "site-return"):
            steps = [Step(at, "site_crash", "a", "inject", lambda: l.kill_site("a"))]
            if self.scenario == "site-return":
                steps.append(Step(at + 10, "site_crash", "a", "heal", lambda: l.start_site("a")))
            return steps
        if self.scenario == "leader-crash":
            return [
                Step(at, "leader_crash", "leader", "inject", self._kill_leader),
                Step(at + 5, "leader_crash", "leader", "heal", self._restart_leader),
            ]
        if self.scenario == "switchover":
            return [
                Step(at, "switchover", "eap", "inject", lambda: self._operate("switchover")),
                Step(at + 10, "switchover", "eap", "heal", lambda: self._operate("rebalance")),
            ]
        if self.scenario == "drain":
            return [
                Step(at, "drain", "a", "inject", lambda: self._operate("drain")),
                Step(at + 10, "drain", "a", "heal", lambda: self._operate("undrain")),
            ]
        if self.scenario in LICENSE_SCENARIOS:
            return LicenseScenario(
                self.scenario,
                self.license,
                self.watch_license(),
                self.run_dir,
                self.topology,
                (l.kill_site, l.start_site),
            ).steps(at)
        if self.scenario in UPDATE_SCENARIOS:
            demo_update.write_release(self.run_dir, self.scenario, self.topology)
            clock, store, topology = SystemClock(), self.coordination(), self.topology
            readiness = demo_update.UpdateReadiness(store, topology, clock)
            return [
                Step(
                    at,
                    "update",
                    "release",
                    "inject",
                    lambda: demo_update.start_update(store, self.scenario, topology, clock),
                    readiness.ready,
                    readiness.waiting_for,
                ),
                *self._leader_crash_during_update(at + 15),
                Step(  # after the crash's steps: a step waits for those before it
                    at + 21 if self.scenario == "update-leader-crash" else at,
                    "update",
                    "release",
                    "heal",
                    lambda: None,
                    lambda: demo_update.update_finished(store),
                ),
            ]
        return []

    def _leader_crash_during_update(self, at_s: float) -> list[Step]:
        if self.scenario != "update-leader-crash":
            return []
        return [
            Step(at_s, "leader_crash", "leader", "inject", self._kill_leader),
            Step(at_s + 5, "leader_crash", "leader", "heal", self._restart_leader),
        ]

    def _operate(self, action: str) -> None:
        """What an operator would do with the CLI, through the same functions."""
        store = open_store(Endpoints.load(self.run_dir).store)
        clock = SystemClock()
        trail = AuditTrail(  # audited as the CLI's commands are (docs/audit.md)
            self.run_dir / AUDIT_FILE, store, who=f"bfm demo ({operator_identity()})", clock=clock
        )
        how: dict[str, Any] = {
            "topology": self.topology,
            "clock": clock,
            "changed_by": "bfm demo",
            "reason": f"scenario {self.scenario}",
            "audit": trail,
        }
        try:
            if action == "switchover":
                admin.switchover(store, "eap", "b", **how)
            elif action == "rebalance":
                admin.rebalance(store, **how)
            elif action == "drain":
                admin.drain(store, "a", **how)
            else:
                admin.undrain(store, "a", **how)
        finally:
            store.close()

    def _signal(self, site: str, component: str, signum: int) -> None:
        self.launcher.signal_component(site, component, signum)

    def _signal_eap(self, signum: int) -> None:
        self._eap_pid = self.launcher.signal_component("a", "eap", signum)

    def _kill_eap(self) -> None:
        self._signal_eap(signal.SIGKILL)

    def _eap_replaced(self) -> bool:
        pid = self.launcher.component_pid("a", "eap")
        return pid is not None and pid != self._eap_pid

    def _kill_leader(self) -> None:
        got = self.coordination().get(LEADER_KEY)
        self._leader = str(got.value["holder"]) if got else "w"
        self.launcher.kill_site(self._leader)

    def _restart_leader(self) -> None:
        self.launcher.start_site(self._leader)

    def watch_license(self) -> LicenseWatch:
        if self.license_watch is None:
            self.license_watch = LicenseWatch(self.coordination())
        return self.license_watch

    def tick(self) -> None:
        """Run every step that is due; note the license verdict's changes."""
        if time.monotonic() - self._license_seen_s >= LICENSE_WATCH_EVERY_S:
            self._license_seen_s = time.monotonic()
            self.watch_license().observe()
        run_due(self.steps, time.monotonic() - self.started_s, self.faults)
        self.launcher.restart_rebooted()  # a site that rebooted for an OS update comes back
        if not self._finishing and self.settled() and not self.traffic_done():
            assert self.producer is not None
            self._finishing = True
            self.producer.send_signal(signal.SIGTERM)  # sends no more; waits for its acks

    def steps_not_run(self) -> list[dict[str, object]]:
        """The scenario's steps still waiting when the run ended, and what for."""
        return [step.describe() for step in self.steps]

    def traffic_done(self) -> bool:
        return self.producer is None or self.producer.poll() is not None

    def settled(self) -> bool:
        """With ``settle_s``: the scenario's every step has run, the last one at least
        ``settle_s`` ago; ``tick`` then ends the traffic early (``duration_s`` stays the
        ceiling)."""
        if self.settle_s is None or self.steps or not self.faults:
            return False
        return time.time() - self.faults[-1].at_s >= self.settle_s

    def producer_stats(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.stats_file.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def stop(self) -> dict[str, Any]:
        """Stop the producer (if still running) and every process; the producer's summary."""
        summary: dict[str, Any] = {}
        if self.producer is not None:
            if self.producer.poll() is None:
                self.producer.send_signal(signal.SIGINT)
            try:
                out, _ = self.producer.communicate(timeout=60)
                summary = json.loads(out) if out.strip() else {}
            except (subprocess.TimeoutExpired, ValueError):
                self.producer.kill()
                self.producer.wait(timeout=10)
        self.shards_at_end = final_shards(self.run_dir)  # before stopping moves work
        self.launcher.resume_all()  # a paused process would ignore SIGTERM
        self.launcher.stop()
        if self._store is not None:
            self._store.close()
            self._store = None
        if self.etcd is not None:
            self.etcd.stop()
        if self.logs is not None:
            self.logs.stop()  # last: the processes flushed their logs and spans as they ended
        return summary


def write_scrape_config(run_dir: Path, interval_s: float = 1.0) -> Path:
    """``prometheus.yml`` for the run: every process announces its metrics address in
    ``targets/<site>-<component>.json`` (file_sd), so ``prometheus --config.file`` on it
    scrapes them all, in OpenMetrics when exemplar storage is on."""
    (run_dir / "targets").mkdir(parents=True, exist_ok=True)
    path = run_dir / "prometheus.yml"
    path.write_text(
        "# Written by bfm demo: scrape every process of this run.\n"
        "global:\n"
        f"  scrape_interval: {interval_s:g}s\n"
        f"  evaluation_interval: {interval_s:g}s\n"
        "scrape_configs:\n"
        "  - job_name: bfm\n"
        "    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(run_dir / 'targets' / '*.json'))}]\n"
        "        refresh_interval: 5s\n",
        encoding="utf-8",
    )
    return path


def headless_command(
    scenario: str,
    *,
    run_dir: Path,
    report: Path,
    duration_s: float,
    rate_per_s: float,
    shards: int | None = None,
    store: str = "sqlite",
    mix: str = "uniform",
    logstore: bool = False,
    settle_s: float | None = None,
    tls: bool = False,
) -> list[str]:
    """The command line of one ``bfm demo --headless`` run (tests and benchmarks)."""
    return [
        sys.executable,
        "-m",
        "failover",
        "demo",
        "--headless",
        f"--duration={duration_s}s",
        f"--rate={rate_per_s}",
        *([f"--shards={shards}"] if shards is not None else []),
        f"--scenario={scenario}",
        f"--run-dir={run_dir}",
        f"--report={report}",
        f"--store={store}",
        f"--mix={mix}",
        "--logstore" if logstore else "--no-logstore",
        *([f"--settle={settle_s:g}s"] if settle_s is not None else []),
        *(["--tls"] if tls else []),
    ]
