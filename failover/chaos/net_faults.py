"""The faults a chaos run injects into a :class:`~failover.chaos.netsystem.NetSystem`.

Each :class:`Fault` is a kind (the report's fault label), a target, and how to inject and
heal it. The network faults come from :mod:`failover.chaos.netns` (cut a site's link, pair
and one-way blackholes, a flapping link); the process faults signal the processes the
system started (SIGSTOP/SIGCONT, SIGKILL), found by PID.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from failover.chaos.netns import Flap
from failover.chaos.netsystem import STORE_MEMBER, NetSystem

FLAP_PERIOD_S = 2.0  # one cut and one heal per period


@dataclass
class Fault:
    kind: str
    target: str
    inject: Callable[[], None]
    heal: Callable[[], None]
    ready: Callable[[], bool] = field(default=lambda: True)  # the heal is due once this holds


def isolate(system: NetSystem, site: str) -> Fault:
    """The site's link down: it reaches no one, no one reaches it; it keeps running."""
    net = system.net
    return Fault("site_isolation", site, lambda: net.isolate(site), lambda: net.heal_link(site))


def cut_pair(system: NetSystem, x: str, y: str) -> Fault:
    """x and y cannot talk; both still reach the third site and the clients."""
    net = system.net
    return Fault("pair_cut", f"{x}-{y}", lambda: net.cut_pair(x, y), lambda: net.heal_pair(x, y))


def cut_oneway(system: NetSystem, src: str, dst: str) -> Fault:
    """src's packets to dst are dropped (TCP between them breaks both ways, UDP one way)."""
    net = system.net
    return Fault(
        "one_way_cut",
        f"{src}>{dst}",
        lambda: net.cut_oneway(src, dst),
        lambda: net.heal_oneway(src, dst),
    )


def flap(system: NetSystem, site: str, *, hold_s: float) -> Fault:
    """The site's link cut and healed every ``FLAP_PERIOD_S`` for ``hold_s``."""
    running: list[Flap] = []
    count = max(1, round(hold_s / FLAP_PERIOD_S))

    def start() -> None:
        running.append(system.net.flap(site, period_s=FLAP_PERIOD_S, count=count))

    def stop() -> None:
        for each in running:
            each.stop()
        system.net.heal_link(site)

    return Fault("link_flap", site, start, stop)


def pause_leader(system: NetSystem) -> Fault:
    """SIGSTOP the site process whose controller replica leads (its agent pauses with it:
    one process), SIGCONT at the heal. The target is found when the fault starts."""
    paused: list[str] = []

    def start() -> None:
        site = system.leader() or "w"
        system.launcher.signal_site(site, signal.SIGSTOP)
        paused.append(site)

    def stop() -> None:
        for site in paused:
            system.launcher.signal_site(site, signal.SIGCONT)

    return Fault("leader_pause", "leader", start, stop)


def pause_owner(system: NetSystem, site: str) -> Fault:
    """SIGSTOP every component process of a worker site (the owners of its shards, with
    the site's router), SIGCONT the same processes at the heal: the paused old owner."""
    pids: list[int] = []
    launcher = system.launcher

    def start() -> None:
        pids.extend(launcher.component_pids(site))
        launcher.signal_pids(pids, signal.SIGSTOP)

    def stop() -> None:
        launcher.signal_pids(pids, signal.SIGCONT)

    return Fault("owner_pause", site, start, stop)


def crash_owner(system: NetSystem, site: str) -> Fault:
    """kill -9 every component process of a worker site; its supervisor restarts them (the
    heal is recorded once they all run again)."""
    launcher = system.launcher

    def start() -> None:
        launcher.signal_pids(launcher.component_pids(site), signal.SIGKILL)

    return Fault(
        "component_crash",
        site,
        start,
        lambda: None,
        lambda: launcher.components_running(site),
    )


def crash_site(system: NetSystem, site: str) -> Fault:
    """kill -9 the site's process and its components; started again at the heal."""
    launcher = system.launcher
    return Fault(
        "site_crash", site, lambda: launcher.kill_site(site), lambda: launcher.start_site(site)
    )


def kill_store_member(system: NetSystem, site: str) -> Fault:
    """kill -9 the site's etcd member; restarted on its data at the heal."""
    index = STORE_MEMBER[site]
    return Fault(
        "store_member_crash",
        site,
        lambda: system.etcd.kill(index),
        lambda: system.etcd.restart(index),
    )
