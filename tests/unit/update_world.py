"""An in-memory stand-in for the Platform port's version calls, for update tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from failover.core.versions import DEFAULT_VERSION, ComponentHealth, fails_after_ready


@dataclass
class MemoryPlatform:
    """Just enough of the Platform port for SiteVersions: versions, restarts, counters."""

    versions: dict[tuple[str, str], str] = field(default_factory=dict)
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    handled: dict[tuple[str, str], int] = field(default_factory=dict)

    def version(self, site: str, component: str) -> str:
        return self.versions.get((site, component), DEFAULT_VERSION)

    def set_version(self, site: str, component: str, version: str) -> None:
        self.versions[(site, component)] = version
        self.changes.append((site, component, version))
        self.handled[(site, component)] = 0

    def restart(self, site: str, component: str) -> None:
        self.changes.append((site, component, "restart"))

    def health(self, site: str, component: str) -> ComponentHealth:
        """Every call, 20 more messages: all refused by a fail-after-ready version."""
        n = self.handled.get((site, component), 0) + 20
        self.handled[(site, component)] = n
        version = self.version(site, component)
        if fails_after_ready(version):
            return ComponentHealth(version, 0, n)
        return ComponentHealth(version, n, 0, (n,) + (0,) * 10)
