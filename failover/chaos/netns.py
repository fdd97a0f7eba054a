"""Three-site network harness: Linux network namespaces joined by a bridge, and its faults.

Layout (root only): one namespace per site (``<prefix>-a``, ``-b``, ``-w``), one for the
clients (``<prefix>-c``) and one holding the bridge (``<prefix>-br``). Each site or client
namespace has one veth pair, created straight into the namespaces (nothing ever appears
in the host namespace): one end in the site, the other a port of the bridge. Addresses
come from one private /24 that no host address or route overlaps.

The host namespace routes those addresses off this machine: every client of them must
itself run inside one of the namespaces (``Network.popen`` / ``Network.exec``).

Faults: ``cut_link`` / ``isolate`` set the bridge-side veth end down (the site sees
NO-CARRIER; its packets vanish silently), ``cut_pair`` / ``cut_oneway`` add blackhole
routes inside one namespace (local senders get ``EINVAL`` at once; packets from the
other side still arrive, replies to them are dropped), ``flap`` repeats a cut a bounded
number of times in a background thread, ``heal_all`` undoes everything. Everything made
is removed by ``close`` (idempotent), also run from ``__exit__``, an ``atexit`` hook and
a SIGTERM handler; ``cleanup_stale`` removes what runs killed with SIGKILL left behind.
See docs/netns.md.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import IO

SITES: tuple[str, ...] = ("a", "b", "w")
CLIENT = "c"
ENDPOINTS: tuple[str, ...] = (*SITES, CLIENT)
BRIDGE = "br"
HOST_OCTET: Mapping[str, int] = {"a": 1, "b": 2, "w": 3, CLIENT: 10}
SUBNET_BASE = "10.213"
# A prefix from this process: "bfm" + pid + "n" + a per-process counter (base 36).
DEFAULT_PREFIX_PATTERN = r"bfm(?P<pid>\d+)n[0-9a-z]+"
_NS_SUFFIXES = (*ENDPOINTS, BRIDGE, "probe")
# Interface names are <prefix><endpoint>[b] and <prefix>br: at most 15 characters.
MAX_PREFIX_LEN = 13
IP_TIMEOUT_S = 10.0
STOP_GRACE_S = 2.0

_counter = itertools.count()
_live: dict[int, Network] = {}
_live_lock = threading.RLock()
_hooks_installed = False


class NetnsError(Exception):
    """An ``ip`` command failed or the harness was used wrongly."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args]
    try:
        done = subprocess.run(  # noqa: S603 - fixed binary, arguments built here
            cmd, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`{' '.join(cmd)}` did not finish in {IP_TIMEOUT_S} s") from exc
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    return done


def _next_prefix() -> str:
    n = next(_counter)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    tag = ""
    while True:
        n, r = divmod(n, 36)
        tag = digits[r] + tag
        if n == 0:
            break
    return f"bfm{os.getpid()}n{tag}"


def available() -> str | None:
    """None when this process can build namespaces here, else the reason it cannot."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{_next_prefix()}-probe"
    try:
        _ip("netns", "add", probe)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    _ip("netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    """Every network namespace name on this host (``ip netns list``)."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix_pattern: str = DEFAULT_PREFIX_PATTERN) -> list[str]:
    """Delete namespaces left by earlier runs; returns the names removed.

    Only names ``<prefix>-<a|b|w|c|br|probe>`` whose prefix fully matches
    ``prefix_pattern`` are touched. When the pattern has a ``pid`` group (the default
    does), a namespace whose creating process is still alive is left alone, so running
    harnesses are safe; so are this process's own open networks. Processes still inside a
    stale namespace were started by that harness: they get SIGKILL first, since a
    namespace lives on while a process is in it.
    """
    name_re = re.compile(f"(?P<prefix>{prefix_pattern})-(?:{'|'.join(_NS_SUFFIXES)})")
    with _live_lock:
        own = {net.prefix for net in _live.values()}
    removed: list[str] = []
    for name in namespaces():
        match = name_re.fullmatch(name)
        if match is None or match.group("prefix") in own:
            continue
        pid = match.groupdict().get("pid")
        if pid is not None and _pid_alive(int(pid)):
            continue
        for line in _ip("netns", "pids", name, check=False).stdout.split():
            if line.isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line), signal.SIGKILL)
        if _ip("netns", "del", name, check=False).returncode == 0:
            removed.append(name)
    return removed


def pause(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP a process this harness's caller started (a hang: sockets stay open)."""
    proc.send_signal(signal.SIGSTOP)


def resume(proc: subprocess.Popen[bytes]) -> None:
    """SIGCONT a paused process."""
    proc.send_signal(signal.SIGCONT)


def crash(proc: subprocess.Popen[bytes], *, timeout_s: float = 5.0) -> int:
    """SIGKILL a process the caller started and reap it; returns its exit status."""
    proc.kill()
    return proc.wait(timeout=timeout_s)


@dataclass(frozen=True)
class FaultEvent:
    """One fault action on the timeline: ``at_s`` on the network's monotonic clock."""

    at_s: float
    kind: str  # link_cut, link_heal, pair_cut, pair_heal, one_way_cut, one_way_heal
    target: str  # a site ("b"), a pair ("a-b") or a direction ("a>b")


class Flap:
    """A link cut and healed ``count`` times in a background thread; ends connected."""

    def __init__(self, net: Network, site: str, *, period_s: float, count: int) -> None:
        if period_s <= 0 or count < 1:
            raise NetnsError("flap needs period_s > 0 and count >= 1")
        self.site = site
        self.period_s = period_s
        self.count = count
        self.cuts_done = 0
        self.error: NetnsError | None = None
        self._net = net
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"flap-{site}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        half_s = self.period_s / 2
        try:
            for _ in range(self.count):
                if self._stop.is_set():
                    break
                self._net.cut_link(self.site)
                self.cuts_done += 1
                self._stop.wait(half_s)
                self._net.heal_link(self.site)
                if self._stop.wait(half_s):
                    break
            self._net.heal_link(self.site)
        except NetnsError as exc:  # the network was closed under us, or ip failed
            self.error = exc

    def wait(self, timeout_s: float) -> bool:
        """Wait for the flapping to end; True when it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """End the flapping early; the link is left up."""
        self._stop.set()
        self._thread.join(timeout_s)


class Network:
    """Namespaces a, b, w, c and a bridge namespace; faults on them; removed by close()."""

    def __init__(
        self,
        *,
        prefix: str | None = None,
        third_octet: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix = prefix if prefix is not None else _next_prefix()
        if not re.fullmatch(r"[a-z][a-z0-9]*", self.prefix) or len(self.prefix) > (MAX_PREFIX_LEN):
            raise NetnsError(
                f"prefix {self.prefix!r} must be lowercase letters and digits, "
                f"at most {MAX_PREFIX_LEN} characters"
            )
        self._clock = clock
        self._lock = threading.RLock()
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._cut_links: set[str] = set()
        self._blackholes: set[tuple[str, str]] = set()
        self._flaps: list[Flap] = []
        self._closed = False
        self.events: list[FaultEvent] = []
        octet = third_octet if third_octet is not None else _free_third_octet()
        self.subnet = ipaddress.IPv4Network(f"{SUBNET_BASE}.{octet}.0/24")
        self.addresses: Mapping[str, str] = {
            ep: str(self.subnet.network_address + HOST_OCTET[ep]) for ep in ENDPOINTS
        }
        _register(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- layout -----------------------------------------------------------------------

    def namespace(self, endpoint: str) -> str:
        """The namespace name of a site, the client (``c``) or the bridge (``br``)."""
        if endpoint not in (*ENDPOINTS, BRIDGE):
            raise NetnsError(f"unknown endpoint {endpoint!r}; use one of {ENDPOINTS}")
        return f"{self.prefix}-{endpoint}"

    @property
    def namespaces(self) -> list[str]:
        return [self.namespace(ep) for ep in (*ENDPOINTS, BRIDGE)]

    def site_interface(self, endpoint: str) -> str:
        """The veth end inside the endpoint's namespace."""
        return f"{self.prefix}{endpoint}"

    def bridge_port(self, endpoint: str) -> str:
        """The endpoint's veth end attached to the bridge (in the bridge namespace)."""
        return f"{self.prefix}{endpoint}b"

    def _build(self) -> None:
        br_ns = self.namespace(BRIDGE)
        bridge = f"{self.prefix}{BRIDGE}"
        for ns in self.namespaces:
            _ip("netns", "add", ns)
            self._created.append(ns)
        # STP off and no forward delay: a port forwards as soon as it is up (heal at once).
        _ip(
            "-n",
            br_ns,
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        )
        _ip("-n", br_ns, "link", "set", bridge, "up")
        plen = str(self.subnet.prefixlen)
        for ep in ENDPOINTS:
            ns, dev, port = self.namespace(ep), self.site_interface(ep), self.bridge_port(ep)
            veth = ["type", "veth", "peer", "name", port, "netns", br_ns]
            _ip("link", "add", dev, "netns", ns, *veth)  # straight into the namespaces
            _ip("-n", br_ns, "link", "set", port, "master", bridge, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[ep]}/{plen}", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    # -- processes --------------------------------------------------------------------

    def command(self, endpoint: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside the endpoint's namespace."""
        return ["ip", "netns", "exec", self.namespace(endpoint), *argv]

    def exec(
        self, endpoint: str, argv: Sequence[str], *, timeout_s: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside a namespace; output captured as text."""
        return subprocess.run(  # noqa: S603 - the caller's own command
            self.command(endpoint, argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def popen(
        self,
        endpoint: str,
        argv: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a command inside a namespace. ``ip netns exec`` execs it in place, so
        the handle's PID is the command's own. The caller owns the handle; close() kills
        whatever of these is still running before it deletes the namespaces."""
        proc = subprocess.Popen(  # noqa: S603 - the caller's own command
            self.command(endpoint, argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
        )
        with self._lock:
            self._procs.append(proc)
        return proc

    # -- faults -----------------------------------------------------------------------

    def _event(self, kind: str, target: str) -> None:
        self.events.append(FaultEvent(at_s=self._clock(), kind=kind, target=target))

    def _site(self, endpoint: str) -> str:
        if endpoint not in ENDPOINTS:
            raise NetnsError(f"unknown endpoint {endpoint!r}; use one of {ENDPOINTS}")
        return endpoint

    def _set_port(self, site: str, state: str) -> None:
        _ip("-n", self.namespace(BRIDGE), "link", "set", self.bridge_port(self._site(site)), state)

    def cut_link(self, site: str) -> None:
        """Set the site's bridge port down: the site reaches no one and no one reaches it.
        The site's own interface shows NO-CARRIER and keeps its routes, so its packets
        are dropped silently (connects time out) rather than refused."""
        with self._lock:
            self._set_port(site, "down")
            self._cut_links.add(site)
            self._event("link_cut", site)

    def heal_link(self, site: str) -> None:
        with self._lock:
            self._set_port(site, "up")
            if site in self._cut_links:
                self._cut_links.discard(site)
                self._event("link_heal", site)

    def isolate(self, site: str) -> None:
        """Cut a site off from every other site and the clients (same as cut_link)."""
        self.cut_link(site)

    def _blackhole(self, src: str, dst: str, *, add: bool) -> None:
        ns, dst_addr = self.namespace(self._site(src)), self.addresses[self._site(dst)]
        if add:
            _ip("-n", ns, "route", "replace", "blackhole", f"{dst_addr}/32")
            self._blackholes.add((src, dst))
        elif (src, dst) in self._blackholes:
            _ip("-n", ns, "route", "del", "blackhole", f"{dst_addr}/32", check=False)
            self._blackholes.discard((src, dst))

    def cut_pair(self, x: str, y: str) -> None:
        """x and y cannot talk to each other; both still reach everyone else."""
        with self._lock:
            self._blackhole(x, y, add=True)
            self._blackhole(y, x, add=True)
            self._event("pair_cut", f"{x}-{y}")

    def heal_pair(self, x: str, y: str) -> None:
        with self._lock:
            self._blackhole(x, y, add=False)
            self._blackhole(y, x, add=False)
            self._event("pair_heal", f"{x}-{y}")

    def cut_oneway(self, src: str, dst: str) -> None:
        """Drop src's packets to dst (a blackhole route in src's namespace).

        UDP: datagrams src -> dst are lost (src's send fails with EINVAL), dst -> src
        still arrive. TCP needs both directions, so every connection between them breaks:
        src cannot connect to dst, and dst's connects to src time out (src's SYN-ACKs
        are dropped)."""
        with self._lock:
            self._blackhole(src, dst, add=True)
            self._event("one_way_cut", f"{src}>{dst}")

    def heal_oneway(self, src: str, dst: str) -> None:
        with self._lock:
            self._blackhole(src, dst, add=False)
            self._event("one_way_heal", f"{src}>{dst}")

    def flap(self, site: str, *, period_s: float, count: int) -> Flap:
        """Cut and heal the site's link ``count`` times, ``period_s`` per cycle (half cut,
        half connected), in the background; the returned Flap can wait or stop."""
        flap = Flap(self, self._site(site), period_s=period_s, count=count)
        with self._lock:
            self._flaps.append(flap)
        return flap

    def heal_all(self) -> None:
        """Stop flapping, bring every link up and remove every blackhole route."""
        with self._lock:
            flaps, self._flaps = self._flaps, []
        for flap in flaps:
            flap.stop()
        with self._lock:
            for site in ENDPOINTS:
                self.heal_link(site)
            for src, dst in sorted(self._blackholes):
                self._blackhole(src, dst, add=False)
                self._event("one_way_heal", f"{src}>{dst}")

    # -- cleanup ----------------------------------------------------------------------

    def close(self) -> None:
        """Kill the processes started through popen, delete every namespace made (which
        deletes the veths and the bridge). Idempotent; errors are ignored so a partial
        network is removed as far as possible."""
        with self._lock:
            if self._closed:
                return
            for flap in self._flaps:
                flap._stop.set()  # the thread's last heal may fail once the ns is gone
            for proc in self._procs:
                _end(proc)
            for ns in reversed(self._created):
                _ip("netns", "del", ns, check=False)
            self._created.clear()
            self._closed = True
        _unregister(self)

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        proc.terminate()
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_GRACE_S)
    except ProcessLookupError:
        pass


def _free_third_octet() -> int:
    """A third octet for SUBNET_BASE.X.0/24 that no host address or route overlaps and no
    open network of this process uses (clarity only: the namespaces never see the host's
    routes)."""
    taken: list[ipaddress.IPv4Network] = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        for word in _ip(*args, check=False).stdout.split():
            try:
                net = ipaddress.IPv4Network(word, strict=False)
            except ValueError:
                continue
            if net.prefixlen > 0:
                taken.append(net)
    with _live_lock:
        taken.extend(net.subnet for net in _live.values())
    start = os.getpid() % 254
    for i in range(254):
        octet = (start + i) % 254 + 1
        candidate = ipaddress.IPv4Network(f"{SUBNET_BASE}.{octet}.0/24")
        if not any(candidate.overlaps(net) for net in taken):
            return octet
    raise NetnsError(f"no free /24 under {SUBNET_BASE}.0.0/16 on this host")


def _register(net: Network) -> None:
    global _hooks_installed  # noqa: PLW0603 - one process-wide exit hook
    with _live_lock:
        _live[id(net)] = net
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # Only replace the default action (death without atexit); Python's own
            # SIGINT handler raises KeyboardInterrupt, which __exit__ handles.
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _on_signal)


def _unregister(net: Network) -> None:
    with _live_lock:
        _live.pop(id(net), None)


def _close_all() -> None:
    with _live_lock:
        nets = list(_live.values())
    for net in nets:
        net.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
