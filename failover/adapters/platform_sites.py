"""What every Platform adapter checks of the sites and components it is asked about.

One ``PlatformSites`` per platform: the topology and the worker sites that platform runs.
Each check raises the ``ValueError`` the ``Platform`` contract asks for, naming the unknown
site or component and what is known (``failover.ports.Platform``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from failover.core.topology import Topology
from failover.core.versions import check_version


class PlatformSites:
    """The sites a platform runs, and the contract's checks of names."""

    def __init__(
        self,
        topology: Topology,
        sites: Collection[str] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        """``sites``: the worker sites run (default: every worker of ``topology``);
        ``versions``: component -> its start version, checked here."""
        self.topology = topology
        managed = tuple(topology.workers if sites is None else sites)
        for site in managed:
            self.check_site(site)
            if not topology.is_worker(site):
                raise ValueError(f"site {site!r} is a witness: it runs no components")
        for component, version in (versions or {}).items():
            if component not in topology.components:
                raise ValueError(
                    f"versions names unknown component {component!r}; "
                    f"known: {', '.join(topology.components)}"
                )
            check_version(version)
        self.managed = managed

    def check_site(self, site: str) -> None:
        names = self.topology.site_names
        if site not in names:
            raise ValueError(f"unknown site {site!r}; known: {', '.join(names)}")

    def check_managed(self, site: str) -> None:
        self.check_site(site)
        if site not in self.managed:
            raise ValueError(
                f"site {site!r} is not run by this platform (it runs {', '.join(self.managed)})"
            )

    def check_entry_point(self, site: str) -> None:
        self.check_site(site)
        if not self.topology.is_worker(site):
            raise ValueError(f"site {site!r} is a witness: it has no entry point to route")

    def unknown_component(self, site: str, component: str) -> ValueError:
        return ValueError(
            f"unknown component {component!r} at site {site!r}; "
            f"known: {', '.join(self.topology.components)}"
        )
