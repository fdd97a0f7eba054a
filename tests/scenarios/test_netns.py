"""The three-site network harness: every fault proven with real traffic between namespaces.

Each namespace runs a small probe agent (TCP and UDP echo on one port) driven over its
stdin/stdout pipes, so every packet is sent from inside a namespace, never from the host
namespace, whose routes send those addresses off this machine. Root only; skipped with the
reason otherwise (a failure under CI=true).
"""

from __future__ import annotations

import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failover.chaos import netns
from failover.chaos.netns import ENDPOINTS, Network

pytestmark = pytest.mark.scenario

PORT = 7411
REPO = Path(__file__).resolve().parents[2]
REPLY_CEILING_S = 10.0
UP_TIMEOUT_S = 2.0  # a reachable peer answers well within this
DOWN_TIMEOUT_S = 0.4  # how long a probe waits before calling a peer unreachable
HEAL_WITHIN_S = 5.0

AGENT = r"""
import json, socket, sys, threading, time
port = int(sys.argv[1])
seen = set()
lock = threading.Lock()

def tcp_echo():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        conn.settimeout(2)
        try:
            conn.sendall(conn.recv(64))
        except OSError:
            pass
        conn.close()

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", port))

def udp_echo():
    while True:
        data, addr = udp.recvfrom(64)
        with lock:
            seen.add(data.decode())
        try:
            udp.sendto(data, addr)
        except OSError:
            pass

def handle(req):
    op, token, timeout = req["op"], req.get("token", ""), req.get("timeout", 1.0)
    dst = (req.get("host"), req.get("port", port))
    if op == "tcp":
        try:
            with socket.create_connection(dst, timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(token.encode())
                return {"ok": s.recv(64) == token.encode()}
        except OSError as exc:
            return {"ok": False, "err": repr(exc)}
    if op in ("udp", "udp_send"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            s.sendto(token.encode(), dst)
            if op == "udp_send":
                return {"ok": True}
            return {"ok": s.recvfrom(64)[0] == token.encode()}
        except OSError as exc:
            return {"ok": False, "err": repr(exc)}
        finally:
            s.close()
    if op == "seen":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if token in seen:
                    return {"ok": True}
            time.sleep(0.02)
        return {"ok": False}
    return {"ok": False, "err": "unknown op"}

for target in (tcp_echo, udp_echo):
    threading.Thread(target=target, daemon=True).start()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    print(json.dumps(handle(json.loads(line))), flush=True)
"""


class Agent:
    """One probe agent inside a namespace; requests over its pipes, bounded waits."""

    def __init__(self, net: Network, endpoint: str) -> None:
        self.proc = net.popen(
            endpoint,
            [sys.executable, "-c", AGENT, str(PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert json.loads(self._lines.get(timeout=REPLY_CEILING_S)) == {"ready": True}

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.decode())

    def ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self._lines.get(timeout=REPLY_CEILING_S))
        return reply


class Probes:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.agents = {ep: Agent(net, ep) for ep in ENDPOINTS}
        self._tokens = itertools.count()

    def token(self) -> str:
        return f"t{next(self._tokens)}"

    def tcp(self, src: str, dst: str, *, timeout_s: float = UP_TIMEOUT_S) -> bool:
        host = self.net.addresses[dst]
        return bool(
            self.agents[src].ask(op="tcp", host=host, token=self.token(), timeout=timeout_s)["ok"]
        )

    def udp(self, src: str, dst: str, *, timeout_s: float = UP_TIMEOUT_S) -> bool:
        host = self.net.addresses[dst]
        return bool(
            self.agents[src].ask(op="udp", host=host, token=self.token(), timeout=timeout_s)["ok"]
        )

    def udp_arrives(self, src: str, dst: str, *, wait_s: float) -> bool:
        """Send one datagram src -> dst; True when dst's agent received it within wait_s."""
        token = self.token()
        self.agents[src].ask(op="udp_send", host=self.net.addresses[dst], token=token)
        return bool(self.agents[dst].ask(op="seen", token=token, timeout=wait_s)["ok"])

    def reaches(self, src: str, dst: str) -> bool:
        return self.tcp(src, dst) and self.udp(src, dst)

    def cut_off(self, src: str, dst: str) -> bool:
        """Neither TCP nor UDP gets through src -> dst (short timeouts)."""
        return not self.tcp(src, dst, timeout_s=DOWN_TIMEOUT_S) and not self.udp(
            src, dst, timeout_s=DOWN_TIMEOUT_S
        )

    def all_pairs_reach(self) -> bool:
        deadline = time.monotonic() + HEAL_WITHIN_S
        pairs = [(s, d) for s in ENDPOINTS for d in ENDPOINTS if s != d]
        while pairs and time.monotonic() < deadline:
            pairs = [(s, d) for s, d in pairs if not self.reaches(s, d)]
        return not pairs


def _ours_in_host(prefix: str) -> tuple[list[str], list[str]]:
    """Our namespaces and interfaces visible from the host namespace."""
    names = [ns for ns in netns.namespaces() if ns.startswith(f"{prefix}-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    ifaces = [line for line in links.stdout.splitlines() if prefix in line]
    return names, ifaces


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    reason = netns.available()
    if reason is not None:
        pytest.skip(reason)
    with Network() as network:
        yield network
    assert _ours_in_host(network.prefix) == ([], [])


@pytest.fixture(scope="module")
def probes(net: Network) -> Probes:
    return Probes(net)


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "net" in request.fixturenames:
        request.getfixturevalue("net").heal_all()


def test_layout_and_everyone_reaches_everyone(net: Network, probes: Probes) -> None:
    base = str(net.subnet.network_address)[: -len(".0")]
    assert dict(net.addresses) == {
        "a": f"{base}.1",
        "b": f"{base}.2",
        "w": f"{base}.3",
        "c": f"{base}.10",
    }
    assert set(net.namespaces) <= set(netns.namespaces())
    # The veths were made straight into the namespaces: nothing of ours in the host.
    assert _ours_in_host(net.prefix)[1] == []
    assert probes.all_pairs_reach()


def test_cut_link_isolates_the_site_until_healed(net: Network, probes: Probes) -> None:
    net.cut_link("b")
    for other in ("a", "w", "c"):
        assert probes.cut_off(other, "b")
        assert probes.cut_off("b", other)
    assert probes.reaches("a", "w")
    assert probes.reaches("c", "a")
    net.heal_link("b")
    assert probes.all_pairs_reach()
    assert [(e.kind, e.target) for e in net.events[-2:]] == [("link_cut", "b"), ("link_heal", "b")]


def test_isolate_is_a_link_cut(net: Network, probes: Probes) -> None:
    net.isolate("w")
    assert probes.cut_off("a", "w")
    assert probes.cut_off("w", "c")
    assert probes.reaches("a", "b")
    net.heal_all()
    assert probes.all_pairs_reach()


def test_pair_cut_leaves_both_reaching_the_third(net: Network, probes: Probes) -> None:
    net.cut_pair("a", "b")
    assert probes.cut_off("a", "b")
    assert probes.cut_off("b", "a")
    for site in ("a", "b"):
        assert probes.reaches(site, "w")
        assert probes.reaches("w", site)
        assert probes.reaches("c", site)
    net.heal_pair("a", "b")
    assert probes.all_pairs_reach()


def test_one_way_cut_drops_only_that_direction_for_udp(net: Network, probes: Probes) -> None:
    net.cut_oneway("a", "b")
    assert not probes.udp_arrives("a", "b", wait_s=DOWN_TIMEOUT_S)
    assert probes.udp_arrives("b", "a", wait_s=UP_TIMEOUT_S)
    # b's datagram arrives but a's echo back is dropped; TCP breaks both ways.
    assert not probes.udp("b", "a", timeout_s=DOWN_TIMEOUT_S)
    assert not probes.tcp("a", "b", timeout_s=DOWN_TIMEOUT_S)
    assert not probes.tcp("b", "a", timeout_s=DOWN_TIMEOUT_S)
    assert probes.reaches("a", "w")
    assert probes.reaches("w", "b")
    net.heal_oneway("a", "b")
    assert probes.udp_arrives("a", "b", wait_s=UP_TIMEOUT_S)
    assert probes.all_pairs_reach()


def test_flap_is_bounded_and_ends_connected(net: Network, probes: Probes) -> None:
    flap = net.flap("w", period_s=0.6, count=3)
    outcomes: list[bool] = []
    deadline = time.monotonic() + 10.0
    while not flap.wait(0.0) and time.monotonic() < deadline:
        outcomes.append(probes.udp("c", "w", timeout_s=0.1))
    assert flap.wait(5.0)
    assert flap.error is None
    assert flap.cuts_done == 3
    assert True in outcomes
    assert False in outcomes
    assert probes.reaches("c", "w")
    kinds = [e.kind for e in net.events if e.target == "w"][-6:]
    assert kinds == ["link_cut", "link_heal"] * 3


def test_heal_all_undoes_every_fault(net: Network, probes: Probes) -> None:
    net.cut_link("b")
    net.cut_pair("a", "w")
    net.cut_oneway("c", "a")
    flap = net.flap("c", period_s=10.0, count=5)
    assert probes.cut_off("a", "w")
    net.heal_all()
    assert flap.wait(0.0)
    assert probes.all_pairs_reach()


def test_pause_and_crash_helpers(net: Network, probes: Probes) -> None:
    victim = net.popen(
        "w",
        [sys.executable, "-c", AGENT, str(PORT + 1)],
        stdin=subprocess.PIPE,  # the agent runs until its stdin closes
        stdout=subprocess.PIPE,
    )
    assert victim.stdout is not None
    assert victim.stdout.readline()  # ready: its listeners are bound
    host = net.addresses["w"]

    def tcp_to_victim(timeout_s: float) -> bool:
        req = {"op": "tcp", "host": host, "port": PORT + 1, "token": "p", "timeout": timeout_s}
        return bool(probes.agents["a"].ask(**req)["ok"])

    assert tcp_to_victim(UP_TIMEOUT_S)
    netns.pause(victim)
    assert not tcp_to_victim(DOWN_TIMEOUT_S)  # the kernel accepts, the process never echoes
    netns.resume(victim)
    assert tcp_to_victim(UP_TIMEOUT_S)
    assert netns.crash(victim) == -signal.SIGKILL
    assert not tcp_to_victim(DOWN_TIMEOUT_S)


def test_close_removes_everything_and_is_idempotent(net: Network) -> None:
    other = Network()
    assert other.subnet != net.subnet
    sleeper = other.popen("a", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert len(_ours_in_host(other.prefix)[0]) == 5
    other.close()
    assert sleeper.poll() is not None
    assert _ours_in_host(other.prefix) == ([], [])
    other.close()
    assert net.namespace("a") in netns.namespaces()


CHILD = r"""
import sys, time
from failover.chaos.netns import Network
net = Network()
print(net.prefix, flush=True)
time.sleep(60)
"""


def _child_network() -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert child.stdout is not None
    prefix = child.stdout.readline().strip()
    assert prefix.startswith(f"bfm{child.pid}n")
    return child, prefix


def test_sigkilled_owner_leaves_stale_namespaces_that_cleanup_stale_removes(
    net: Network,
) -> None:
    child, prefix = _child_network()
    try:
        assert len(_ours_in_host(prefix)[0]) == 5
        child.kill()
        child.wait(timeout=10)
        assert len(_ours_in_host(prefix)[0]) == 5  # SIGKILL: no hook ran
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        removed = netns.cleanup_stale()
    assert sorted(removed) == sorted(f"{prefix}-{ep}" for ep in (*ENDPOINTS, "br"))
    assert _ours_in_host(prefix) == ([], [])
    # A live owner's network (this process's) is never stale.
    assert set(net.namespaces) <= set(netns.namespaces())


def test_sigterm_cleans_up(net: Network) -> None:
    child, prefix = _child_network()
    try:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM
        left = _ours_in_host(prefix)  # before any cleanup_stale could hide a leftover
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        netns.cleanup_stale()
    assert left == ([], [])
