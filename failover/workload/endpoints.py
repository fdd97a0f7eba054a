"""The run directory's map of who listens where: ``endpoints.json``.

One file names the store and, per site, its heartbeat address and, per worker site, its
router and every module's address; every process of a run reads it, and operators' commands
find the system through it.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failover.adapters.files import write_text_atomically
from failover.core.topology import Topology

ENDPOINTS_FILE = "endpoints.json"
Address = tuple[str, int]


@dataclass(frozen=True)
class SiteEndpoints:
    heartbeat: Address
    router: Address | None
    modules: dict[str, Address]


@dataclass(frozen=True)
class Endpoints:
    store: str
    shards_per_component: int
    sites: dict[str, SiteEndpoints]

    def save(self, run_dir: Path) -> None:
        data = {
            "store": self.store,
            "shards_per_component": self.shards_per_component,
            "sites": {
                s: {
                    "heartbeat": list(e.heartbeat),
                    "router": list(e.router) if e.router else None,
                    "modules": {c: list(a) for c, a in e.modules.items()},
                }
                for s, e in self.sites.items()
            },
        }
        write_text_atomically(run_dir / ENDPOINTS_FILE, json.dumps(data, indent=2))

    @staticmethod
    def load(run_dir: Path) -> Endpoints:
        path = run_dir / ENDPOINTS_FILE
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            sites = {
                s: SiteEndpoints(
                    heartbeat=_address(e["heartbeat"]),
                    router=_address(e["router"]) if e.get("router") else None,
                    modules={c: _address(a) for c, a in e["modules"].items()},
                )
                for s, e in data["sites"].items()
            }
            return Endpoints(str(data["store"]), int(data["shards_per_component"]), sites)
        except FileNotFoundError:
            raise ValueError(
                f"no {ENDPOINTS_FILE} in {run_dir}: is this a BFM run directory?"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path} is malformed ({err})") from None


def _address(value: Any) -> Address:
    host, port = value
    return str(host), int(port)


class _Ports:
    """Free ports on 127.0.0.1, each held open until all are chosen (so none repeats)."""

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def take(self, kind: int = socket.SOCK_STREAM) -> Address:
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        self._held.append(s)
        return "127.0.0.1", int(s.getsockname()[1])

    def release(self) -> None:
        for s in self._held:
            s.close()


def allocate(store: str, topology: Topology) -> Endpoints:
    """Free ports on 127.0.0.1 for every process of a three-site run on this machine."""
    ports, sites = _Ports(), {}
    try:
        for site in topology.site_names:
            worker = topology.is_worker(site)
            sites[site] = SiteEndpoints(
                heartbeat=ports.take(socket.SOCK_DGRAM),
                router=ports.take() if worker else None,
                modules={c: ports.take() for c in topology.components} if worker else {},
            )
    finally:
        ports.release()
    return Endpoints(store, topology.shards_per_component, sites)


SITE_BASE_PORT = 7100
"""In a site of its own (a network namespace), the site's ports start here."""


def allocate_per_site(
    store: str, topology: Topology, hosts: dict[str, str], *, base_port: int = SITE_BASE_PORT
) -> Endpoints:
    """Fixed ports on each site's own address (sites in network namespaces of their own:
    nothing else listens there, and the same port numbers may repeat across sites):
    heartbeat ``base_port`` (UDP), router ``base_port + 1``, modules from ``base_port + 2``
    in the topology's component order."""
    missing = [s for s in topology.site_names if s not in hosts]
    if missing:
        raise ValueError(f"no address for site(s) {', '.join(missing)}")
    if not 1024 <= base_port <= 65535 - 2 - len(topology.components):
        raise ValueError(f"base_port {base_port} leaves no room for every port of a site")
    sites = {}
    for site in topology.site_names:
        host, worker = hosts[site], topology.is_worker(site)
        sites[site] = SiteEndpoints(
            heartbeat=(host, base_port),
            router=(host, base_port + 1) if worker else None,
            modules=(
                {c: (host, base_port + 2 + i) for i, c in enumerate(topology.components)}
                if worker
                else {}
            ),
        )
    return Endpoints(store, topology.shards_per_component, sites)
