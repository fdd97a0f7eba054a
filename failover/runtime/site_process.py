"""One site's BFM process: the agent (worker sites), the controller, and direct heartbeats.

Threads, each on its own schedule: lease renewal every ``renew_interval_s``, ownership
reads and probes every ``poll_interval_s``, the controller every ``controller_interval_s``,
pings every ``heartbeat_interval_s``. A worker site that runs its own components has a
supervisor too (``failover.runtime.supervisor``): it starts them, restarts crashed ones and
gives up on crash loops. ``stop()`` stops the components first, then ends every thread;
nothing keeps running.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover.core.controller import Decision, PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.fencing import Ownership
from failover.core.quorum import LeaseTiming
from failover.core.topology import Topology, default_topology
from failover.core.versions import ComponentHealth
from failover.ports import Clock, CoordinationStore, Dongle, NodeIsolation
from failover.runtime.controller import ControllerRuntime
from failover.runtime.grants import Grants, publish
from failover.runtime.grants_http import GrantsBoard, GrantsServer
from failover.runtime.heartbeats import HeartbeatChannel, Peer
from failover.runtime.license_keeper import DonglePublisher, LicenseKeeper, LicensePolicy
from failover.runtime.site_agent import SiteAgentRuntime
from failover.runtime.site_isolation import SiteIsolation
from failover.runtime.site_versions import EXIT_REBOOT, SiteVersions
from failover.runtime.supervisor import Supervisor
from failover.runtime.update_runner import UpdateRunner

log = logging.getLogger("bfm.site")


@dataclass(frozen=True)
class SiteSettings:
    """What one site process needs to know (seconds)."""

    site: str
    topology: Topology = field(default_factory=default_topology)
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    detector: DetectorTiming = field(default_factory=DetectorTiming)
    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    poll_interval_s: float = 0.1
    controller_interval_s: float = 0.1
    listen: tuple[str, int] = ("127.0.0.1", 0)
    peers: Mapping[str, Peer] = field(default_factory=dict)
    fencing_enabled: bool = True
    grants_file: Path | None = None  # where to publish this site's grants for its components
    grants_listen: tuple[str, int] | None = None  # serve them over HTTP too (pods)
    grants_tls: ssl.SSLContext | None = None  # serve them over mutual TLS (BFM_TLS_*)
    versions_interval_s: float = 0.5  # how often the site reconciles and reports versions
    license: LicensePolicy | None = None  # None: licensing not configured (nothing judged)
    license_interval_s: float = 1.0  # how often the dongle is read and the license judged
    audit_log: Path | None = None  # where the controller audits its decisions (None: not)
    heartbeat_key: bytes | None = None  # the sites' shared secret for heartbeats (None: none)


class SiteProcess:
    """Runs one site until ``stop()``."""

    def __init__(
        self,
        settings: SiteSettings,
        *,
        store: CoordinationStore,
        clock: Clock,
        probe: Callable[[str], bool] = lambda component: True,
        exited: Callable[[str], bool] | None = None,
        supervisor: Supervisor | None = None,
        controller_store: CoordinationStore | None = None,
        health: Callable[[str], ComponentHealth | None] = lambda component: None,
        items_file: Path | None = None,
        dongle: Dongle | None = None,
        isolation: NodeIsolation | None = None,
    ) -> None:
        """``controller_store``: the store as the controller replica reaches it (default
        ``store``; the site entry point passes a second ``InstrumentedStore`` around the
        same store, so each side's requests are measured under its own label).
        ``health``: a component's last reported version and counters (its liveness ping);
        ``items_file``: where the site's installed OS and cluster versions are kept.
        ``dongle``: this site's license dongle (published when licensing is configured).
        ``isolation``: the platform's out-of-service marks of a dead site's nodes
        (``failover.runtime.site_isolation``), applied while this replica leads."""
        self.settings = settings
        self.supervisor = supervisor
        self._serving: bool | None = None  # as last routed through the platform
        self.clock = clock
        self._stop = threading.Event()  # ends the loops
        self._stop_requested = threading.Event()  # ends ``wait``: the owner then calls stop()
        self._lock = threading.Lock()  # guards the agent: loops and heartbeats share it
        self.errors = 0
        self.exit_code = 0  # EXIT_REBOOT after an OS update: start the site again
        s = settings
        self.grants_board = GrantsBoard()
        self.grants_server = (
            GrantsServer(
                self.grants_board,
                bind=s.grants_listen,
                monotonic=clock.monotonic,
                tls=s.grants_tls,
            )
            if s.grants_listen is not None
            else None
        )
        self.agent: SiteAgentRuntime | None = None
        if s.topology.is_worker(s.site):
            self.agent = SiteAgentRuntime(
                s.site,
                store=store,
                clock=clock,
                topology=s.topology,
                timing=s.timing,
                detector=s.detector,
                probe=probe,
                exited=exited,
                fencing_enabled=s.fencing_enabled,
                publish_grants=self._publish_grants if self._publishes_grants else None,
            )
        self.controller = ControllerRuntime(
            s.site,
            store=controller_store or store,
            clock=clock,
            topology=s.topology,
            timing=s.timing,
            detector=s.detector,
            policy=s.policy,
            on_commit=self._committed,
            audit_log=s.audit_log,
            # the witness's replica leads when it can: a worker's waits one lease first
            acquire_after_s=s.timing.lease_duration_s if s.topology.is_worker(s.site) else 0.0,
        )
        self._heard_at_s: dict[str, float] = {}  # peer -> when its last answered ping went
        self.heartbeats = HeartbeatChannel(
            s.site,
            bind=s.listen,
            peers=dict(s.peers),  # the witness too: its store access decides failsafes
            store_ok=self._store_ok,
            on_report=self._peer_report,
            monotonic=clock.monotonic,
            key=s.heartbeat_key,
        )
        self.versions = SiteVersions(
            s.site,
            store=store,
            clock=clock,
            topology=s.topology,
            platform=supervisor.platform if supervisor is not None else None,
            ready=probe,
            health=health,
            on_reboot=self._reboot,
            items_file=items_file,
        )
        self.updates = UpdateRunner(controller_store or store, topology=s.topology, clock=clock)
        self.isolation = (
            SiteIsolation(
                isolation,
                store=controller_store or store,
                topology=s.topology,
                clock=clock,
                audit=self.controller.audit,
            )
            if isolation is not None
            else None
        )
        self.dongle = (
            DonglePublisher(store, dongle, site=s.site, clock=clock)
            if dongle is not None and s.license is not None
            else None
        )
        self.license = (
            LicenseKeeper(controller_store or store, s.license, site=s.site, clock=clock)
            if s.license is not None
            else None
        )
        self._threads: list[threading.Thread] = []
        self._was_leading = False

    def start(self) -> None:
        s = self.settings
        if self.supervisor is not None:
            self.supervisor.start()
        self.heartbeats.start()
        if self.grants_server is not None:
            self.grants_server.start()
        loops: list[tuple[str, float, Callable[[], None]]] = [
            ("controller", s.controller_interval_s, self._controller_tick),
            ("heartbeats", s.timing.heartbeat_interval_s, self.heartbeats.ping_all),
            ("versions", s.versions_interval_s, self.versions.tick),
        ]
        if self.license is not None:
            loops.append(("license", s.license_interval_s, self._license_tick))
        if self.agent is not None:
            loops += [
                ("renew", s.timing.renew_interval_s, self._renew),
                ("poll", s.poll_interval_s, self._poll),
            ]
        for name, interval_s, fn in loops:
            thread = threading.Thread(
                target=self._every, args=(interval_s, fn), name=f"{s.site}-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        log.info("site started", extra={"event": "started", "site": s.site})

    def _reboot(self) -> None:
        """An OS update: stop everything; the process exits with ``EXIT_REBOOT``."""
        log.warning(
            f"site {self.settings.site} reboots for an OS update",
            extra={"event": "reboot", "site": self.settings.site},
        )
        self.exit_code = EXIT_REBOOT
        self._stop_requested.set()

    def request_stop(self) -> None:
        """Ask to stop (safe from a signal handler): ``wait`` returns, the owner calls stop()."""
        self._stop_requested.set()

    def stop(self) -> None:
        self._stop_requested.set()
        if self.supervisor is not None:
            # The components stop cleanly while the site still runs: its lease stays
            # fresh and its agent reports them down, so their shards move meanwhile.
            self.supervisor.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self.heartbeats.close()
        if self.grants_server is not None:
            self.grants_server.close()
        log.info("site stopped", extra={"event": "stopped", "site": self.settings.site})

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a stop was requested (True) or ``timeout_s`` passed (False)."""
        return self._stop_requested.wait(timeout_s)

    def _every(self, interval_s: float, fn: Callable[[], None]) -> None:
        next_s = self.clock.monotonic()
        while not self._stop.is_set():
            try:
                fn()
            except Exception:
                self.errors += 1
                log.exception("loop step failed", extra={"event": "error"})
            next_s += interval_s
            delay_s = next_s - self.clock.monotonic()
            if delay_s < 0:
                next_s, delay_s = self.clock.monotonic(), 0.0
            self._stop.wait(delay_s)

    def _store_ok(self) -> bool:
        """What this site's heartbeats say of its store access. "Down" (which lets the
        others enter a failsafe) only when nothing here reaches it: neither the agent's
        last renewal nor the controller replica's last round (it might lead and act)."""
        with self._lock:
            agent_ok = self.agent.agent.store_ok if self.agent else False
            return agent_ok or self.controller.store_ok

    def _peer_report(self, peer: str, store_ok: bool, sent_s: float) -> None:
        self._heard_at_s[peer] = sent_s
        if self.agent is not None:
            with self._lock:
                self.agent.heard_peer(peer, store_ok=store_ok, at_s=sent_s)

    def heard(self, site: str) -> bool | None:
        """Whether ``site`` answered a direct heartbeat within the renew deadline (this
        site: True; a peer never heard: None). Faster than any platform's node facts."""
        if site == self.settings.site:
            return True
        heard_s = self._heard_at_s.get(site)
        if heard_s is None:
            return None
        return self.clock.monotonic() - heard_s <= self.settings.timing.renew_deadline_s

    @property
    def _publishes_grants(self) -> bool:
        return self.settings.grants_file is not None or self.grants_server is not None

    def _publish_grants(self, grants: Grants) -> None:
        """Hand the grants to the site's components: the file, and the board served."""
        if self.settings.grants_file is not None:
            publish(self.settings.grants_file, grants)
        self.grants_board.publish(grants)

    def _renew(self) -> None:
        assert self.agent is not None
        with self._lock:
            self.agent.renew()

    def _poll(self) -> None:
        assert self.agent is not None
        with self._lock:
            before = self.agent.components_up()
            fenced = self.agent.poll()
            after = self.agent.components_up()
            session = self.agent.agent.session
            # a fenced site, and one an operator (or an update) drained, take no clients
            serving = not self.agent.agent.fenced and not self.versions.drained
            grants = self.agent.grants() if self._publishes_grants else None
        if grants is not None:
            self._publish_grants(grants)
        self._route(serving=serving)
        for component in sorted(set(before) ^ set(after)):
            up = component in after
            log.log(
                logging.INFO if up else logging.WARNING,
                f"component {component} {'up' if up else 'down'} at site {self.settings.site}",
                extra={
                    "event": "component_up" if up else "component_down",
                    "site": self.settings.site,
                    "component": component,
                },
            )
        if fenced:
            log.warning(
                "site fenced itself: lease not renewed in time and no failsafe",
                extra={"event": "fenced", "site": self.settings.site, "session": session},
            )

    def _route(self, *, serving: bool) -> None:
        """A fenced site leaves its clients' routing at once, and rejoins with its next
        session (the platform's entry point: a Service's endpoints, or the local file)."""
        if self.supervisor is None or serving == self._serving:
            return
        try:
            self.supervisor.platform.route(self.settings.site, serving=serving)
        except (OSError, ValueError) as err:
            log.error(
                f"cannot route site {self.settings.site} (serving={serving}): {err}",
                extra={"event": "route_failed", "site": self.settings.site},
            )
            return
        self._serving = serving
        log.info(
            f"site {self.settings.site} {'takes' if serving else 'leaves'} client traffic",
            extra={"event": "routed", "site": self.settings.site, "serving": serving},
        )

    def _controller_tick(self) -> None:
        self.controller.tick()
        leading = self.controller.leading(self.clock.monotonic())
        if leading:
            self.updates.tick()
            if self.isolation is not None:
                self.isolation.tick(self.controller)
            self._export_witness_liveness()
        if leading != self._was_leading:
            self._was_leading = leading
            what = "became the leader" if leading else "is no longer the leader"
            log.info(f"controller {what}", extra={"event": "leader", "leading": leading})

    def _export_witness_liveness(self) -> None:
        """``bfm_site_up`` of the sites without a lease (the witness), as the leader's
        direct heartbeats hear them: a witness that stopped answering is down (one more
        failure and no majority is left). A worker's replica leads a lease duration after
        its start at the earliest, far longer than a heartbeat takes, so a witness it never
        heard is down. No peer address given: nothing is claimed about it."""
        s = self.settings
        for site in s.topology.site_names:
            if s.topology.is_worker(site) or (site != s.site and site not in s.peers):
                continue
            alive = self.heard(site) is True
            self.controller.metrics.site_liveness(site, alive=alive, detected_after_s=None)

    def _license_tick(self) -> None:
        """Publish this site's dongle; judge the license when this replica leads."""
        assert self.license is not None
        if self.dongle is not None:
            self.dongle.tick()
        if self.controller.leading(self.clock.monotonic()):
            self.license.tick()
        else:
            self.license.stop_leading()

    def _committed(self, decision: Decision, before: Ownership) -> None:
        shards = list(decision.shards)
        log.info(
            f"{decision.kind.value} {decision.component} {shards}: {decision.reason}",
            extra={
                "event": "decision",
                "kind": decision.kind.value,
                "component": decision.component,
                "shards": list(decision.shards),
                "epoch": decision.ownership.max_epoch,
                "epochs": [decision.ownership.shards[i].epoch for i in shards],
                "at_wall_s": self.clock.wall(),
                "trace_id": decision.ownership.trace_id,
                "span_id": decision.ownership.span_id,
            },
        )

    def status(self) -> dict[str, Any]:
        """What this site serves now, and its roles (for status output and tests)."""
        now = self.clock.monotonic()
        result: dict[str, Any] = {
            "site": self.settings.site,
            "leading": self.controller.leading(now),
            "errors": self.errors,
        }
        if self.supervisor is not None:
            result["instances"] = self.supervisor.snapshot()
        if self.agent is not None:
            with self._lock:
                topology = self.settings.topology
                result["fenced"] = self.agent.agent.fenced
                result["session"] = self.agent.agent.session
                result["serving"] = {
                    c: [
                        i
                        for i in range(topology.shards_per_component)
                        if self.agent.serving(c, i) is not None
                    ]
                    for c in topology.components
                }
        return result
