"""BFM's three sites on real networks: each site's processes inside its own namespace.

:class:`NetSystem` takes a :class:`~failover.chaos.netns.Network` and runs, per site, that
site's etcd member (fixed ports on the site's address) and its BFM site process (agent,
controller replica and, at a and b, the backbone components it starts and supervises),
every one inside the site's namespace through ``ip netns exec``. The producer runs in
the client namespace. This process itself never sends to the namespaces' addresses from
the host namespace (they are routed off this machine): its store reads and etcd health
probes go through a :class:`~failover.chaos.nsthread.NamespaceThread` in the client
namespace. Everything else (history, ledgers, logs, routing and instance files) is
shared through the run directory, as on one host.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from failover.adapters.etcd_cluster import EtcdCluster, MemberPlace
from failover.adapters.store_url import open_store
from failover.chaos.netns import CLIENT, SITES, Network
from failover.chaos.nsthread import NamespaceThread
from failover.core.topology import Topology
from failover.ports import CoordinationStore, StoreError
from failover.runtime.documents import LEADER_KEY, OWNERSHIP_PREFIX
from failover.workload.launcher import Launcher

T = TypeVar("T")
STORE_MEMBER = {site: index for index, site in enumerate(SITES)}  # etcd member per site


class NetSystem:
    """The store, the sites and (on request) the producer of one run, in ``net``."""

    def __init__(
        self,
        run_dir: Path,
        topology: Topology,
        net: Network,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        unknown = [s for s in topology.site_names if s not in SITES]
        if unknown:
            raise ValueError(f"the network has sites {SITES}; the topology also names {unknown}")
        self.run_dir, self.topology, self.net = run_dir, topology, net
        self.env = {**os.environ, **(env or {})}
        self.client = NamespaceThread(net.namespace(CLIENT))
        self.launcher = Launcher(
            run_dir, topology, env=self.env, argv_prefix=lambda site: net.command(site, [])
        )
        self.etcd = EtcdCluster(
            run_dir / "etcd",
            places=[MemberPlace(net.addresses[s], tuple(net.command(s, []))) for s in SITES],
            probe_in=self.client.call,
        )
        self._store: CoordinationStore | None = None

    # -- start / stop ----------------------------------------------------------------------

    def start(self) -> None:
        """The etcd members (healthy, as seen from the client namespace), then each site."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.etcd.start()
        hosts = {s: self.net.addresses[s] for s in self.topology.site_names}
        self.launcher.prepare(self.etcd.url, hosts=hosts)
        for site in self.topology.site_names:
            self.launcher.start_site(site)

    def start_producer(
        self,
        *,
        rate_per_s: float,
        duration_s: float,
        stats_file: Path,
        site: str = "a",
        inside: str = CLIENT,
        seed: int = 1,
        stay_local: bool = False,
    ) -> subprocess.Popen[bytes]:
        """``bfm produce`` in namespace ``inside`` (the client namespace, or a site's own
        for that site's local devices), sending to ``site``'s router first; its JSON
        summary comes on stdout, its history goes to ``history-<seed>.jsonl``."""
        argv = [
            sys.executable,
            "-m",
            "failover",
            "produce",
            f"--run-dir={self.run_dir}",
            f"--rate={rate_per_s}",
            f"--duration={duration_s}s",
            f"--site={site}",
            f"--stats-file={stats_file}",
            f"--seed={seed}",
            *(["--stay-local"] if stay_local else []),
            "--json",
        ]
        with (self.run_dir / f"producer-{seed}.log").open("ab") as log:
            return self.net.popen(inside, argv, stdout=subprocess.PIPE, stderr=log, env=self.env)

    def stop(self) -> None:
        """Every site process (SIGCONT first: a paused one cannot act on SIGTERM), then
        etcd. Idempotent; the network itself is the caller's to close."""
        self.net.heal_all()  # a cut-off site stops slowly: its store calls time out
        self.launcher.resume_all()
        self.launcher.stop()
        self.close_store()
        self.etcd.stop()
        self.client.close()

    # -- the store, read from the client namespace -----------------------------------------

    def read(self, work: Callable[[CoordinationStore], T]) -> T:
        """``work(store)`` run in the client namespace, on a store opened there once."""

        def run() -> T:
            if self._store is None:
                self._store = open_store(self.etcd.url)
            return work(self._store)

        return self.client.call(run)

    def close_store(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            with contextlib.suppress(Exception):
                self.client.call(store.close)

    def leader(self) -> str | None:
        """The site whose controller replica holds the leader lease now (None if unknown)."""
        try:
            got = self.read(lambda store: store.get(LEADER_KEY))
        except StoreError:
            return None
        return str(got.value["holder"]) if got is not None else None

    def placed(self) -> int:
        """How many components have their ownership document (0 while the store is down)."""
        try:
            return len(self.read(lambda store: store.list(OWNERSHIP_PREFIX)))
        except StoreError:
            return 0
