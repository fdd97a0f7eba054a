"""The Sentinel baseline's config files, and looking at it from inside namespace ``c``.

Every look is a ``redis-cli`` run in the clients' namespace (``Network.exec``): the
namespaces' addresses are routed off this machine from the host namespace.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from failover.chaos.netns import Network
from failover.chaos.sentinel_analysis import log_events
from failover.chaos.sentinel_writer import KEY_PREFIX

MASTER_NAME = "bfm"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
PRIMARY_SITE = "a"
REPLICA_SITE = "b"
SENTINEL_SITES: tuple[str, ...] = ("a", "b", "w")
CLIENT_SITE = "c"
CHECK_TIMEOUT_S = 2.0  # one redis-cli call; a paused server makes it wait this long
SCAN_TIMEOUT_S = 20.0


def redis_config(bind: str, data: Path, *, replica_of: str | None) -> str:
    """A redis-server config: no persistence, full syncs start at once."""
    lines = [
        f"bind {bind} 127.0.0.1",
        f"port {REDIS_PORT}",
        "protected-mode no",
        "daemonize no",
        f'dir "{data}"',
        f'logfile "{data / "redis.log"}"',
        'save ""',
        "appendonly no",
        "repl-diskless-sync-delay 0",
    ]
    if replica_of is not None:
        lines.append(f"replicaof {replica_of} {REDIS_PORT}")
    return "\n".join(lines) + "\n"


def sentinel_config(
    bind: str,
    data: Path,
    *,
    master: str,
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> str:
    """A redis-sentinel config (Sentinel rewrites it as it learns: keep it writable)."""
    lines = [
        f"bind {bind} 127.0.0.1",
        f"port {SENTINEL_PORT}",
        "protected-mode no",
        "daemonize no",
        f'dir "{data}"',
        f'logfile "{data / "sentinel.log"}"',
        f"sentinel monitor {MASTER_NAME} {master} {REDIS_PORT} {quorum}",
        f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
        f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
        f"sentinel parallel-syncs {MASTER_NAME} 1",
    ]
    return "\n".join(lines) + "\n"


def _pairs(lines: Sequence[str]) -> dict[str, str]:
    return dict(zip(lines[0::2], lines[1::2], strict=False))


class Observer:
    """Questions to the baseline's servers, asked from namespace c, and its logs."""

    def __init__(self, net: Network, run_dir: Path) -> None:
        self.net = net
        self.run_dir = run_dir

    def cli(
        self, site: str, port: int, *args: str, timeout_s: float = CHECK_TIMEOUT_S
    ) -> list[str]:
        """``redis-cli`` run in namespace c against a site's server: its output lines, or
        [] when it fails or does not answer in time (a paused server)."""
        argv = ["redis-cli", "-h", self.net.addresses[site], "-p", str(port), *args]
        try:
            done = self.net.exec(CLIENT_SITE, argv, timeout_s=timeout_s)
        except subprocess.TimeoutExpired:
            return []
        return done.stdout.splitlines() if done.returncode == 0 else []

    def info(self, site: str) -> dict[str, str]:
        """INFO replication of the redis at a site (``role``, ``master_link_status``...)."""
        lines = self.cli(site, REDIS_PORT, "info", "replication")
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def sentinel_master(self, site: str) -> dict[str, str]:
        """``SENTINEL MASTER`` as the sentinel at a site sees it (``ip``, ``flags``...)."""
        return _pairs(self.cli(site, SENTINEL_PORT, "sentinel", "master", MASTER_NAME))

    def master_address(self) -> str | None:
        """ "host:port" of the master named by a majority of the sentinels (2 of 3), or
        None when no majority answers the same (a sentinel cut off counts as no answer)."""
        named = self.sentinels_master_addresses()
        for address in set(named.values()):
            if list(named.values()).count(address) > len(SENTINEL_SITES) // 2:
                return address
        return None

    def sentinels_master_addresses(self) -> dict[str, str]:
        """Site -> "host:port" each answering sentinel names the master."""
        named: dict[str, str] = {}
        for site in SENTINEL_SITES:
            got = self.cli(site, SENTINEL_PORT, "sentinel", "get-master-addr-by-name", MASTER_NAME)
            if len(got) == 2:
                named[site] = f"{got[0]}:{got[1]}"
        return named

    def replication_problem(self) -> str | None:
        """None when the primary at a streams to the replica at b, else what is wrong."""
        info = self.info(PRIMARY_SITE)
        if info.get("role") != "master" or "state=online" not in info.get("slave0", ""):
            return f"primary at a, INFO replication: {info or 'no answer'}"
        replica = self.info(REPLICA_SITE)
        if replica.get("master_link_status") != "up":
            return f"replica at b, INFO replication: {replica or 'no answer'}"
        return None

    def agreement_problem(self) -> str | None:
        """None when every sentinel knows the primary at a as master, the replica and the
        other sentinels, else what is still missing."""
        want = {
            "ip": self.net.addresses[PRIMARY_SITE],
            "flags": "master",
            "num-slaves": "1",
            "num-other-sentinels": str(len(SENTINEL_SITES) - 1),
        }
        for site in SENTINEL_SITES:
            seen = self.sentinel_master(site)
            wrong = {k: seen.get(k) for k, v in want.items() if seen.get(k) != v}
            if wrong:
                return f"sentinel at {site} sees {wrong}, wants {want}"
        return None

    def sentinels_naming(self, address: str) -> str | None:
        """None when a majority of the sentinels answer and every one that answers names
        ``address`` the master (a sentinel cut off from c cannot answer), else what they
        name."""
        named = self.sentinels_master_addresses()
        if len(named) > len(SENTINEL_SITES) // 2 and set(named.values()) == {address}:
            return None
        return f"sentinels name {named} (those missing did not answer)"

    def replica_problem(self, site: str, master: str) -> str | None:
        """None when the redis at ``site`` replicates ``master`` with its link up."""
        host, _, port = master.rpartition(":")
        info = self.info(site)
        link = (info.get("master_host"), info.get("master_port"), info.get("master_link_status"))
        if info.get("role") == "slave" and link == (host, port, "up"):
            return None
        return f"redis at {site}: role={info.get('role')} master/port/link={link}"

    def promoted_at_wall_s(self, new_primary: str | None = None) -> float | None:
        """Earliest ``+switch-master`` (to ``new_primary`` if given) in the sentinel logs."""
        times: list[float] = []
        for site in SENTINEL_SITES:
            log = self.run_dir / f"sentinel-{site}" / "sentinel.log"
            if not log.exists():
                continue
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            for at_s, rest in log_events(lines, "+switch-master"):
                parts = rest.split()  # name old-ip old-port new-ip new-port
                if new_primary is None or (len(parts) == 5 and ":".join(parts[3:]) == new_primary):
                    times.append(at_s)
        return min(times) if times else None

    def final_ids(self) -> set[str] | None:
        """The write ids the current master holds (``--scan``), or None when no sentinel
        names a master of this network or the master does not answer."""
        master = self.master_address()
        if master is None:
            return None
        host, _, port = master.rpartition(":")
        site = next((s for s, a in self.net.addresses.items() if a == host), None)
        if site is None or not port.isdigit():
            return None
        argv = ["--scan", "--pattern", f"{KEY_PREFIX}*"]
        if not self.cli(site, int(port), "ping"):
            return None
        keys = self.cli(site, int(port), *argv, timeout_s=SCAN_TIMEOUT_S)
        return {k[len(KEY_PREFIX) :] for k in keys if k.startswith(KEY_PREFIX)}
