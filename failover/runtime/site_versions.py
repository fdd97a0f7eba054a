"""A site's side of a rolling update: run the versions the update wants, report what runs.

Every ``interval_s`` (a thread of the site process) ``SiteVersions.tick``:

1. reads ``update/desired/<site>`` (``failover.runtime.version_docs``); for each
   component whose desired version differs from the platform's, ``Platform.set_version``
   stops it cleanly and starts the new version (one at a time, in the topology's order);
   a cluster item restarts every component of the site (its cluster components changed
   under them) and is then recorded as installed; an OS item is recorded as installed and
   then the site *reboots*: ``on_reboot`` stops the whole site process, which exits with
   ``EXIT_REBOOT`` for whatever runs it (the demo's launcher, systemd) to start it again;
   A worker site changes nothing until it has been drained (``admin/policy``) for
   ``ROUTE_OUT_S``: a drained site also leaves client traffic (the site process routes
   it out), so no client is connected to a restarting entry point;
2. writes ``update/reported/<site>``: each component's version, readiness (its liveness
   ping) and health counters, and the installed site items.

Installed site items live in ``items_file`` (JSON, written atomically) so they survive
the reboot; without one they are kept in memory. The executor never waits on this
thread: it reads the reports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from failover.adapters.files import write_text_atomically
from failover.core.topology import Topology
from failover.core.versions import ComponentHealth, check_version
from failover.ports import Clock, CoordinationStore, Platform, PlatformError, StoreError
from failover.runtime.documents import ADMIN_POLICY_KEY, AdminPolicy
from failover.runtime.version_docs import (
    ComponentReport,
    DesiredVersions,
    ReportedVersions,
    put_doc,
    read_desired,
    reported_key,
)

log = logging.getLogger("bfm.site")

ROUTE_OUT_S = 1.5
"""How long a drained site stays out of client traffic before its components change (the
clients re-read the routing every half second)."""

REPORT_EVERY_S = 2.0
"""How often a site reports when only its counters changed (well within the executor's
``REPORT_FRESH_S``)."""

EXIT_REBOOT = 75
"""A site process's exit code after an OS update: start me again (EX_TEMPFAIL)."""


def read_items(path: Path | None) -> dict[str, str]:
    """The installed site items (``os:debian`` -> ``12.6``); empty when none are known."""
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): check_version(v) for k, v in dict(raw).items()}
    except (OSError, ValueError, TypeError) as err:
        log.error(
            f"{path} is unreadable ({err}); the site reports no site items until the next "
            "update of them writes it again",
            extra={"event": "items_unreadable"},
        )
        return {}


class SiteVersions:
    """Reconciles one site with its desired versions and reports them (see module doc)."""

    def __init__(
        self,
        site: str,
        *,
        store: CoordinationStore,
        clock: Clock,
        topology: Topology,
        platform: Platform | None,
        ready: Callable[[str], bool],
        health: Callable[[str], ComponentHealth | None],
        on_reboot: Callable[[], None],
        items_file: Path | None = None,
    ) -> None:
        self.site, self.store, self.clock, self.topology = site, store, clock, topology
        self.platform, self.ready, self.health = platform, ready, health
        self.on_reboot, self.items_file = on_reboot, items_file
        self.items = read_items(items_file)
        self.rebooting = False
        self.drained = False  # by admin/policy: the site then leaves client traffic
        self._drained_since_s: float | None = None
        self._warned = ""
        self._last_news: object = None
        self._last_report_s = float("-inf")

    def tick(self) -> None:
        if self.rebooting:
            return
        busy = ""
        self._read_drained()
        try:
            desired = read_desired(self.store, self.site)
        except ValueError as err:
            self._warn(f"update/desired/{self.site} is damaged ({err}); nothing is changed")
            desired = None
        if desired is not None:
            busy = self._apply(desired)
        self.report(busy)

    def _read_drained(self) -> None:
        try:
            got = self.store.get(ADMIN_POLICY_KEY)
            policy = AdminPolicy.from_doc(got.value) if got is not None else AdminPolicy()
        except (StoreError, ValueError):
            return  # keep what was known
        self.drained = self.site in policy.drained_sites
        if not self.drained:
            self._drained_since_s = None
        elif self._drained_since_s is None:
            self._drained_since_s = self.clock.monotonic()

    def may_change_components(self) -> bool:
        """A worker site's components change only while it is drained, and out of client
        traffic for ``ROUTE_OUT_S`` (clients moved to the other site's entry point)."""
        since_s = self._drained_since_s
        return since_s is not None and self.clock.monotonic() - since_s >= ROUTE_OUT_S

    def report(self, busy: str = "") -> None:
        components = {}
        if self.platform is not None and self.site in self.topology.workers:
            for c in self.topology.components:
                components[c] = ComponentReport(
                    self.platform.version(self.site, c), self.ready(c), self.health(c)
                )
        doc = ReportedVersions(self.site, self.clock.wall(), components, dict(self.items), busy)
        # what an executor waits for (versions, readiness, items, busy) goes out at once;
        # otherwise (only the counters grew) every REPORT_EVERY_S, to spare the store
        news = (
            {c: (r.version, r.ready) for c, r in components.items()},
            dict(self.items),
            busy,
        )
        now_s = self.clock.monotonic()
        if news == self._last_news and now_s - self._last_report_s < REPORT_EVERY_S:
            return
        try:
            put_doc(self.store, reported_key(self.site), doc.to_doc())
        except StoreError as err:
            self._warn(f"cannot report this site's versions: {err}")
            return
        self._last_news, self._last_report_s = news, now_s

    def _apply(self, desired: DesiredVersions) -> str:
        """Carry out one change (the next report shows it); what was changed, or ""."""
        worker = self.site in self.topology.workers
        for key, version in desired.items.items():
            if self.items.get(key) == version:
                continue
            if worker and not self.may_change_components():
                return f"waiting for the drain before {key} {version}"
            kind = key.partition(":")[0]
            log.info(
                f"site {self.site}: {key} {self.items.get(key, '?')} -> {version}",
                extra={"event": "site_item_update", "site": self.site, "item": key},
            )
            if kind == "os":
                self._install(key, version)
                self.rebooting = True
                self.report(f"rebooting for {key} {version}")
                self.on_reboot()
                return f"rebooting for {key}"
            self._restart_all()
            self._install(key, version)
            return f"{key} {version}"
        if self.platform is None:
            return ""
        for c in self.topology.components:
            want = desired.components.get(c)
            if want is None or self.site not in self.topology.workers:
                continue
            have = self.platform.version(self.site, c)
            if have == want:
                continue
            if not self.may_change_components():
                return f"waiting for the drain before {c} {want}"
            log.info(
                f"site {self.site}: {c} {have} -> {want}",
                extra={"event": "component_update", "site": self.site, "component": c},
            )
            try:
                self.platform.set_version(self.site, c, want)
            except (PlatformError, ValueError) as err:
                self._warn(f"cannot run {c} {want}: {err}")
            return f"{c} {want}"
        return ""

    def _restart_all(self) -> None:
        if self.platform is None or self.site not in self.topology.workers:
            return
        for c in self.topology.components:
            try:
                self.platform.restart(self.site, c)
            except (PlatformError, ValueError) as err:
                self._warn(f"cannot restart {c}: {err}")

    def _install(self, key: str, version: str) -> None:
        self.items[key] = version
        if self.items_file is not None:
            write_text_atomically(self.items_file, json.dumps(self.items, sort_keys=True))

    def _warn(self, message: str) -> None:
        if message != self._warned:
            log.warning(message, extra={"event": "versions_error", "site": self.site})
        self._warned = message
