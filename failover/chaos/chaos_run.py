"""`bfm chaos`: BFM on three network-namespace sites under load, faults on a schedule, the
history judged by the checker.

Two producers: the clients in their own namespace (every site reachable only across the
network) and site a's own devices inside a's namespace (a fifth of the rate), which keep
talking to a when a is cut off from the rest, as cameras in a site's LAN would.

A run builds the network (:class:`~failover.chaos.netns.Network`), starts the system in it
(:class:`~failover.chaos.netsystem.NetSystem`: etcd member, site process and components per
site), waits until the work is placed, starts the producer in the client namespace, runs
the scenario's faults (or a random sequence from a seed), and then judges the run
directory with :func:`~failover.chaos.run_check.judge`. The network, the processes and the
namespaces are always removed, also on errors and Ctrl-C.

Scenarios (fault at ``FAULT_AT_S`` after the traffic starts, healed ``HOLD_S`` later):
``isolate-a``/``-b``/``-w`` (a site's link down), ``cut-a-b`` (a and b cannot talk, both
still reach w and the clients), ``oneway-a-to-b``, ``pause-leader`` (the leading
controller's site process stopped for longer than its lease), ``pause-owner-a`` (every
component of a stopped, the old owner resumed), ``kill-store-w`` (w's etcd member killed,
restarted at the heal), ``flap-a`` (a's link cut and healed every 2 s), plus
``crash-owner-a`` and ``crash-site-a``. ``random``: one fault at a time, kinds, targets,
hold times and gaps drawn from the seed.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover.chaos import net_faults as nf
from failover.chaos.netns import SITES, Network
from failover.chaos.netsystem import NetSystem
from failover.chaos.report import FaultEvent, Report
from failover.chaos.run_check import judge, shards_owned
from failover.chaos.schedule import Step, run_due
from failover.core.topology import Topology

FAULT_AT_S = 5.0
HOLD_S = 8.0
PLACEMENT_CEILING_S = 90.0
PRODUCER_GRACE_S = 90.0
LOCAL_SHARE = 0.2  # site a's own devices send this share of the clients' rate
MIN_LOCAL_RATE_PER_S = 20.0  # after its duration: its retries end within its own give-up time

FaultMaker = Callable[[NetSystem], nf.Fault]

SCENARIOS: dict[str, FaultMaker] = {
    "isolate-a": lambda s: nf.isolate(s, "a"),
    "isolate-b": lambda s: nf.isolate(s, "b"),
    "isolate-w": lambda s: nf.isolate(s, "w"),
    "cut-a-b": lambda s: nf.cut_pair(s, "a", "b"),
    "oneway-a-to-b": lambda s: nf.cut_oneway(s, "a", "b"),
    "pause-leader": nf.pause_leader,
    "pause-owner-a": lambda s: nf.pause_owner(s, "a"),
    "kill-store-w": lambda s: nf.kill_store_member(s, "w"),
    "flap-a": lambda s: nf.flap(s, "a", hold_s=HOLD_S),
    "crash-owner-a": lambda s: nf.crash_owner(s, "a"),
    "crash-site-a": lambda s: nf.crash_site(s, "a"),
}


def random_fault(rng: random.Random, system: NetSystem, hold_s: float) -> nf.Fault:
    """One fault of any kind, its target drawn too."""
    site, worker = rng.choice(SITES), rng.choice(system.topology.workers)
    x, y = rng.sample(SITES, 2)
    makers: list[Callable[[], nf.Fault]] = [
        lambda: nf.isolate(system, site),
        lambda: nf.cut_pair(system, x, y),
        lambda: nf.cut_oneway(system, x, y),
        lambda: nf.flap(system, site, hold_s=hold_s),
        lambda: nf.pause_leader(system),
        lambda: nf.pause_owner(system, worker),
        lambda: nf.crash_owner(system, worker),
        lambda: nf.crash_site(system, worker),
        lambda: nf.kill_store_member(system, site),
    ]
    return rng.choice(makers)()


@dataclass
class ChaosRun:
    run_dir: Path
    topology: Topology
    duration_s: float
    rate_per_s: float = 500.0
    scenario: str | None = None  # a SCENARIOS key, or None with a seed: random
    seed: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda _line: None

    def __post_init__(self) -> None:
        if (self.scenario is None) == (self.seed is None):
            raise ValueError("give a scenario or a seed (random faults), not both")
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; known: {', '.join(SCENARIOS)}")
        self.faults: list[FaultEvent] = []
        self.notes: list[dict[str, Any]] = []

    def plan(self, system: NetSystem) -> list[Step]:
        """The steps of this run: the scenario's one fault, or the seed's sequence."""
        if self.scenario is not None:
            return self._steps(SCENARIOS[self.scenario](system), FAULT_AT_S, HOLD_S, system)
        rng = random.Random(self.seed)
        steps: list[Step] = []
        at_s = FAULT_AT_S
        while True:
            hold_s = round(rng.uniform(2.0, 10.0), 1)
            if at_s + hold_s > self.duration_s - 3.0:
                return steps
            steps += self._steps(random_fault(rng, system, hold_s), at_s, hold_s, system)
            at_s = round(at_s + hold_s + rng.uniform(4.0, 12.0), 1)

    def _steps(self, fault: nf.Fault, at_s: float, hold_s: float, system: NetSystem) -> list[Step]:
        def inject() -> None:
            # Which etcd member leads matters for a site cut off (a new store election).
            self.notes.append(
                {"at_s": round(at_s, 1), "kind": fault.kind, "store_leader": _store_leader(system)}
            )
            fault.inject()
            self.progress(f"inject {fault.kind} {fault.target}")

        def heal() -> None:
            fault.heal()
            self.progress(f"heal {fault.kind} {fault.target}")

        return [
            Step(at_s, fault.kind, fault.target, "inject", inject),
            Step(round(at_s + hold_s, 3), fault.kind, fault.target, "heal", heal, fault.ready),
        ]

    def run(self) -> Report:
        """Build, load, fault, judge; everything started is stopped and removed."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stats_file = self.run_dir / "producer-stats.json"
        summary: dict[str, Any] = {}
        shards: dict[str, dict[str, int]] = {}
        with Network() as net:
            system = NetSystem(self.run_dir, self.topology, net, env=self.env)
            try:
                system.start()
                self.progress(f"store {system.etcd.url}; network {net.subnet}")
                self._wait_for_placement(system)
                producers = {
                    "clients": system.start_producer(
                        rate_per_s=self.rate_per_s,
                        duration_s=self.duration_s,
                        stats_file=stats_file,
                    ),
                    # Site a's own devices: on a's side of any cut, as cameras in a's LAN.
                    "site_a_devices": system.start_producer(
                        rate_per_s=max(MIN_LOCAL_RATE_PER_S, self.rate_per_s * LOCAL_SHARE),
                        duration_s=self.duration_s,
                        stats_file=self.run_dir / "producer-a-stats.json",
                        inside="a",
                        seed=2,
                        stay_local=True,
                    ),
                }
                steps = self.plan(system)
                summary = self._drive(producers, steps, stats_file)
                shards = system.read(shards_owned)
            finally:
                system.stop()
        # Waits are the clients' (site a's own devices wait out any cut of a, by design);
        # the checker's counts judge both producers.
        report = judge(
            self.run_dir,
            faults=self.faults,
            shards_per_site=shards,
            availability_of="history-1.jsonl",
        )
        report.extra.update(
            {
                "scenario": self.scenario or "random",
                "seed": self.seed,
                "rate_per_s": self.rate_per_s,
                "duration_s": self.duration_s,
                "store": "etcd, one member per site namespace",
                "fault_notes": self.notes,
                "producer": summary,
                "run_dir": str(self.run_dir),
            }
        )
        return report

    def _wait_for_placement(self, system: NetSystem) -> None:
        start_s = time.monotonic()
        while system.placed() < len(self.topology.components):
            if time.monotonic() - start_s > PLACEMENT_CEILING_S:
                raise RuntimeError(
                    f"the sites did not place the work within {PLACEMENT_CEILING_S:.0f} s; "
                    f"see {self.run_dir}/site-*.log"
                )
            time.sleep(0.2)
        self.progress(f"work placed after {time.monotonic() - start_s:.1f} s")

    def _drive(
        self,
        producers: dict[str, subprocess.Popen[bytes]],
        steps: list[Step],
        stats_file: Path,
    ) -> dict[str, Any]:
        started_s = time.monotonic()
        last_s = started_s
        ceiling_s = self.duration_s + PRODUCER_GRACE_S

        def running() -> bool:
            return any(p.poll() is None for p in producers.values())

        while running() and time.monotonic() - started_s < ceiling_s:
            run_due(steps, time.monotonic() - started_s, self.faults)
            if time.monotonic() - last_s >= 5.0:
                last_s = time.monotonic()
                self.progress(_stats_line(stats_file))
            time.sleep(0.05)
        for step in [s for s in steps if s.action == "heal"]:  # the traffic ended first
            step.run()
            self.faults.append(FaultEvent(time.time(), step.kind, step.target, step.action))
        summary: dict[str, Any] = {}
        for name, producer in producers.items():
            if producer.poll() is None:
                producer.kill()
            out, _ = producer.communicate(timeout=30)
            try:
                summary[name] = json.loads(out) if out.strip() else {}
            except ValueError:
                summary[name] = {}
        return summary


def _store_leader(system: NetSystem) -> str | None:
    index = system.etcd.leader()
    return None if index is None else SITES[index]


def _stats_line(stats_file: Path) -> str:
    try:
        s = json.loads(stats_file.read_text())
    except (OSError, ValueError):
        return "producer starting"
    return f"sent {s.get('sent', 0)} acked {s.get('acked', 0)} p99 {s.get('recent_p99_s', 0)} s"
