"""The simulated world: sites that crash or hang, links that break, and a replicated store.

The store has one member per site and serves a site only while that site's member is in a
connected (both directions) group with a majority of the members: 2 of 3, as etcd does.
Values are the core's own immutable objects; revisions are integers compared for equality.
"""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from failover.core.controller import PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.quorum import LeaseTiming
from failover.core.topology import Topology, default_topology
from failover.ports import Conflict, JsonDoc, StoreUnavailable, Versioned


@dataclass(frozen=True)
class SimConfig:
    """Everything a run needs besides its fault schedule and seed (seconds)."""

    topology: Topology = field(default_factory=default_topology)
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    detector: DetectorTiming = field(default_factory=DetectorTiming)
    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    duration_s: float = 600.0
    min_faults: int = 5
    controller_interval_s: float = 0.1
    poll_interval_s: float = 0.1
    send_interval_s: float = 1.0
    retry_interval_s: float = 0.1
    send_timeout_s: float = 0.5
    route_refresh_interval_s: float = 5.0
    process_delay_s: float = 0.02
    fencing_enabled: bool = True

    @property
    def quiet_tail_s(self) -> float:
        """Fault-free end of a run: long enough for the longest hold-off and the hand-back."""
        return self.detector.max_holdoff_s + 40.0


class Net:
    """Which sites run, which are paused, which directed links are cut, store up or not."""

    def __init__(self, sites: tuple[str, ...]) -> None:
        self.sites = sites
        self.crashed: set[str] = set()
        self.hung: set[str] = set()
        self.cuts: Counter[tuple[str, str]] = Counter()
        self.store_outages = 0
        self._store_ok: dict[str, bool] = {}

    def changed(self) -> None:
        """Call after any change of sites, links or store: forgets cached reachability."""
        self._store_ok.clear()

    def running(self, site: str) -> bool:
        return site not in self.crashed and site not in self.hung

    def link(self, src: str, dst: str) -> bool:
        return self.cuts[(src, dst)] == 0

    def both_ways(self, x: str, y: str) -> bool:
        return self.link(x, y) and self.link(y, x)

    def _group(self, site: str) -> set[str]:
        alive = [s for s in self.sites if s not in self.crashed]
        if site not in alive:
            return set()
        group, todo = {site}, [site]
        while todo:
            x = todo.pop()
            for y in alive:
                if y not in group and self.both_ways(x, y):
                    group.add(y)
                    todo.append(y)
        return group

    def store_ok(self, site: str) -> bool:
        """The site's requests reach a store majority."""
        ok = self._store_ok.get(site)
        if ok is None:
            ok = self.store_outages == 0 and len(self._group(site)) * 2 > len(self.sites)
            self._store_ok[site] = ok
        return ok

    def store_ok_anywhere(self) -> bool:
        return any(self.store_ok(s) for s in self.sites)

    def quiet(self) -> bool:
        """No fault of the network or sites is active (a store outage may be)."""
        return not self.crashed and not self.hung and not +self.cuts


class SimStore:
    """A key -> (document, revision) map, reachable from a site according to ``Net``.

    Documents are stored as given and handed out as they are: readers never mutate them.
    """

    def __init__(self, net: Net) -> None:
        self.net = net
        self.data: dict[str, Versioned] = {}
        self._revision = 0

    def _reach(self, site: str | None) -> None:
        ok = self.net.store_ok_anywhere() if site is None else self.net.store_ok(site)
        if not ok:
            raise StoreUnavailable(f"store unreachable from {site or 'producer'}")

    def get(self, site: str | None, key: str) -> Versioned | None:
        self._reach(site)
        return self.data.get(key)

    def put(self, site: str, key: str, value: JsonDoc, *, expected_revision: str | None) -> str:
        """Compare-and-set; ``expected_revision=None`` means the key must not exist."""
        self._reach(site)
        current = self.data.get(key)
        if (current.revision if current else None) != expected_revision:
            raise Conflict(key)
        self._revision += 1
        revision = str(self._revision)
        self.data[key] = Versioned(key, value, revision)
        return revision


class SimSiteStore:
    """The coordination store port as one site sees the simulated store."""

    def __init__(self, store: SimStore, site: str) -> None:
        self._store, self._site = store, site

    @property
    def url(self) -> str:
        return f"sim://{self._site}"

    def get(self, key: str) -> Versioned | None:
        return self._store.get(self._site, key)

    def list(self, prefix: str) -> builtins.list[Versioned]:
        self._store._reach(self._site)
        return sorted(
            (v for k, v in self._store.data.items() if k.startswith(prefix)), key=lambda v: v.key
        )

    def create(self, key: str, value: JsonDoc) -> str:
        return self._store.put(self._site, key, value, expected_revision=None)

    def compare_and_set(self, key: str, value: JsonDoc, *, expected_revision: str) -> str:
        return self._store.put(self._site, key, value, expected_revision=expected_revision)

    def delete(self, key: str, *, expected_revision: str) -> None:
        self._store._reach(self._site)
        current = self._store.data.get(key)
        if current is None or current.revision != expected_revision:
            raise Conflict(key)
        del self._store.data[key]

    def wait_for_change(
        self, prefix: str, known: Mapping[str, str], *, timeout_s: float
    ) -> builtins.list[Versioned]:
        return self.list(prefix)  # simulated time never blocks: callers poll

    def close(self) -> None:
        return None


class SimClock:
    """The simulated clock as the Clock port: monotonic and wall time are the same here."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def monotonic(self) -> float:
        return self._now()

    def wall(self) -> float:
        return self._now()

    def sleep(self, seconds: float) -> None:
        raise RuntimeError("nothing sleeps in the simulation: schedule an event instead")
