"""The run directory's endpoints.json: allocation on 127.0.0.1, round trip, clear errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from failover.core.topology import default_topology
from failover.workload.endpoints import (
    ENDPOINTS_FILE,
    Endpoints,
    SiteEndpoints,
    allocate,
    allocate_per_site,
)

STORE = "sqlite:///tmp/bfm-test.db"


def _tcp_ports(endpoints: Endpoints) -> list[int]:
    ports = []
    for site in endpoints.sites.values():
        if site.router is not None:
            ports.append(site.router[1])
        ports.extend(port for _, port in site.modules.values())
    return ports


def test_allocate_gives_every_worker_a_router_and_every_module_and_the_witness_none() -> None:
    topology = default_topology(shards_per_component=8)
    endpoints = allocate(STORE, topology)
    assert endpoints.store == STORE
    assert endpoints.shards_per_component == 8
    assert set(endpoints.sites) == {"a", "b", "w"}
    for name in ("a", "b"):
        site = endpoints.sites[name]
        assert site.router is not None
        assert site.router[0] == "127.0.0.1"
        assert set(site.modules) == set(topology.components)
        assert {host for host, _ in site.modules.values()} == {"127.0.0.1"}
    assert endpoints.sites["w"].router is None
    assert endpoints.sites["w"].modules == {}
    assert all(s.heartbeat[0] == "127.0.0.1" for s in endpoints.sites.values())


def test_allocated_ports_can_be_listened_on() -> None:
    endpoints = allocate(STORE, default_topology())
    listeners = []
    try:
        for port in set(_tcp_ports(endpoints)):
            listener = socket.socket()
            listeners.append(listener)
            listener.bind(("127.0.0.1", port))
            listener.listen()
        for site in endpoints.sites.values():
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listeners.append(udp)
            udp.bind(site.heartbeat)
    finally:
        for listener in listeners:
            listener.close()


def test_one_allocation_never_gives_the_same_port_twice() -> None:
    topology = default_topology()
    for _ in range(5000):  # at ~0.7 % per allocation, a repeat shows within a few hundred
        endpoints = allocate(STORE, topology)
        tcp = _tcp_ports(endpoints)
        udp = [s.heartbeat[1] for s in endpoints.sites.values()]
        assert len(set(tcp)) == len(tcp), sorted(tcp)
        assert len(set(udp)) == len(udp), sorted(udp)


def test_save_then_load_gives_the_same_endpoints(tmp_path: Path) -> None:
    endpoints = allocate(STORE, default_topology(shards_per_component=4))
    endpoints.save(tmp_path)
    assert Endpoints.load(tmp_path) == endpoints
    assert [p.name for p in tmp_path.iterdir()] == [ENDPOINTS_FILE]  # no temporary file left


def test_save_replaces_an_older_file(tmp_path: Path) -> None:
    allocate("memory://", default_topology()).save(tmp_path)
    newer = Endpoints(
        STORE, 2, {"a": SiteEndpoints(("127.0.0.1", 7000), ("10.0.0.1", 7001), {"eap": ("h", 1)})}
    )
    newer.save(tmp_path)
    assert Endpoints.load(tmp_path) == newer


def test_a_missing_file_is_an_error_naming_endpoints_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no endpoints\.json in .*is this a BFM run directory"):
        Endpoints.load(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        "null",
        json.dumps({"store": "memory://", "shards_per_component": 4}),
        json.dumps({"store": "memory://", "shards_per_component": "four", "sites": {}}),
        json.dumps(
            {
                "store": "memory://",
                "shards_per_component": 4,
                "sites": {"a": {"heartbeat": ["127.0.0.1"], "router": None, "modules": {}}},
            }
        ),
        json.dumps(
            {
                "store": "memory://",
                "shards_per_component": 4,
                "sites": {"a": {"heartbeat": ["127.0.0.1", 1], "modules": []}},
            }
        ),
    ],
    ids=[
        "not-json",
        "a-list",
        "null",
        "no-sites",
        "bad-count",
        "short-address",
        "modules-a-list",
    ],
)
def test_a_malformed_file_is_an_error_naming_the_path(tmp_path: Path, content: str) -> None:
    path = tmp_path / ENDPOINTS_FILE
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="is malformed") as caught:
        Endpoints.load(tmp_path)
    assert str(path) in str(caught.value)


def test_a_file_that_is_not_text_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / ENDPOINTS_FILE
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="is malformed") as caught:
        Endpoints.load(tmp_path)
    assert str(path) in str(caught.value)


def test_per_site_allocation_uses_each_sites_address_and_fixed_ports(tmp_path: Path) -> None:
    topology = default_topology(shards_per_component=4)
    hosts = {"a": "10.213.7.1", "b": "10.213.7.2", "w": "10.213.7.3"}
    endpoints = allocate_per_site("etcd://10.213.7.1:2379", topology, hosts, base_port=7100)
    a, w = endpoints.sites["a"], endpoints.sites["w"]
    assert a.heartbeat == ("10.213.7.1", 7100)
    assert a.router == ("10.213.7.1", 7101)
    assert sorted(p for _, p in a.modules.values()) == list(range(7102, 7108))
    assert {h for h, _ in a.modules.values()} == {"10.213.7.1"}
    assert endpoints.sites["b"].router == ("10.213.7.2", 7101)  # same ports, other address
    assert (w.heartbeat, w.router, w.modules) == (("10.213.7.3", 7100), None, {})
    endpoints.save(tmp_path)
    assert Endpoints.load(tmp_path) == endpoints


def test_per_site_allocation_names_a_missing_site_and_a_bad_base_port() -> None:
    topology = default_topology()
    with pytest.raises(ValueError, match="no address for site"):
        allocate_per_site("sqlite://x", topology, {"a": "10.0.0.1"})
    with pytest.raises(ValueError, match="base_port"):
        allocate_per_site("sqlite://x", topology, {"a": "h", "b": "h", "w": "h"}, base_port=65534)
