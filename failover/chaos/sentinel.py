"""A Redis Sentinel peer baseline inside the three-site network harness (docs/sentinel.md).

``SentinelSystem(net, run_dir)`` starts Debian's ``redis-server`` as the primary in site a
and as its replica in site b, and one ``redis-sentinel`` in each of a, b and w (quorum 2,
``down-after-milliseconds`` 1000, ``failover-timeout`` 3000), each with its own config, data
directory and log under ``run_dir/<redis|sentinel>-<site>/``. Every server listens on its
namespace's address, on ports of its own namespace: a redis service of the host is
neither used nor touched.

Every check runs ``redis-cli`` inside the clients' namespace ``c`` (``Observer``), and the
writers (``failover.chaos.sentinel_writer``) run there too: the namespaces' addresses are
routed off this machine from the host namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import IO

from failover.chaos import netns
from failover.chaos.netns import Network
from failover.chaos.sentinel_analysis import SentinelOutcome, analyse, read_history
from failover.chaos.sentinel_observe import (
    CLIENT_SITE,
    MASTER_NAME,
    PRIMARY_SITE,
    REDIS_PORT,
    REPLICA_SITE,
    SENTINEL_PORT,
    SENTINEL_SITES,
    Observer,
    redis_config,
    sentinel_config,
)
from failover.chaos.sentinel_procs import SentinelError, WriterRun, end_process, tail, wait_until
from failover.chaos.sentinel_writer import CLIENT_KINDS

__all__ = ["SentinelError", "SentinelOutcome", "SentinelSystem", "WriterRun", "available"]

BINARIES: tuple[str, ...] = ("redis-server", "redis-sentinel", "redis-cli")
START_TIMEOUT_S = 30.0
WRITERS_READY_TIMEOUT_S = 15.0
STOP_GRACE_S = 3.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def available() -> str | None:
    """None when the baseline can run here, else the reason (for a test's skip)."""
    reason = netns.available()
    if reason is not None:
        return reason
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} missing: apt-get install -y redis-server redis-sentinel"
    if find_spec("redis") is None:
        return "the redis-py client is missing: pip install 'redis>=5.0' (or -e '.[dev]')"
    return None


class SentinelSystem:
    """Primary at a, replica at b, sentinels at a, b, w; faults, writers and judgement."""

    def __init__(
        self,
        net: Network,
        run_dir: Path,
        *,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.net = net
        self.run_dir = run_dir
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.start_timeout_s = start_timeout_s
        self.observe = Observer(net, run_dir)
        self.primary = f"{net.addresses[PRIMARY_SITE]}:{REDIS_PORT}"  # the old primary
        self.replica = f"{net.addresses[REPLICA_SITE]}:{REDIS_PORT}"  # the survivor
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # "redis-a", "sentinel-w", ...
        self.writers: list[WriterRun] = []
        self.events: list[tuple[float, str, str]] = []  # (wall s, kind, target)
        self._killed: set[str] = set()
        self._outputs: list[IO[bytes]] = []
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------

    def _logs(self, names: Sequence[str] = ()) -> list[Path]:
        """Each server's log and its stdout (where config errors go), all or ``names``."""
        logs = []
        for name in names or list(self.procs):
            log = self.run_dir / name / f"{name.split('-')[0]}.log"
            logs += [p for p in (log, self.run_dir / name / "stdout.log") if p.exists()]
        return logs

    def _spawn(self, name: str, site: str, binary: str, config: Callable[[Path], str]) -> None:
        data = self.run_dir / name  # config, data, log and stdout of one server
        data.mkdir(parents=True, exist_ok=True)
        conf = data / f"{binary.split('-')[1]}.conf"
        conf.write_text(config(data), encoding="utf-8")
        out = (data / "stdout.log").open("ab")
        self._outputs.append(out)
        argv = [binary, str(conf)]
        self.procs[name] = self.net.popen(site, argv, stdout=out, stderr=subprocess.STDOUT)

    def start(self) -> None:
        """Start the redis servers, wait for replication, start the sentinels and wait
        until each knows the master, the replica and the two other sentinels. On failure
        everything started is stopped before the error propagates."""
        if self.procs or self._stopped:
            raise SentinelError("SentinelSystem.start: already started; use a new one")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        a = self.net.addresses[PRIMARY_SITE]
        for site in (PRIMARY_SITE, REPLICA_SITE):
            bind, replica_of = self.net.addresses[site], a if site == REPLICA_SITE else None
            config = partial(redis_config, bind, replica_of=replica_of)
            self._spawn(f"redis-{site}", site, "redis-server", config)
        # Sentinels start once replication is up: a sentinel whose first INFO of the
        # primary shows no replica learns of it only at its next INFO, 10 s later.
        self._wait("replication up", self.observe.replication_problem)
        for site in SENTINEL_SITES:
            config = partial(
                sentinel_config,
                self.net.addresses[site],
                master=a,
                quorum=self.quorum,
                down_after_ms=self.down_after_ms,
                failover_timeout_ms=self.failover_timeout_ms,
            )
            self._spawn(f"sentinel-{site}", site, "redis-sentinel", config)
        self._wait("all sentinels agreeing", self.observe.agreement_problem)

    def _wait(self, what: str, problem: Callable[[], str | None], timeout_s: float = 0) -> float:
        def check() -> str | None:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if set(dead) - self._killed:
                raise SentinelError(
                    f"Sentinel baseline: {', '.join(dead)} exited on its own (a config "
                    f"error or a port in use?); see its logs under {self.run_dir}:\n"
                    f"{tail(self._logs(dead), lines=4)}"
                )
            return problem()

        return wait_until(what, check, timeout_s or self.start_timeout_s, self._logs)

    def stop(self) -> None:
        """End what this system started, by PID: the writers, the sentinels, the redis
        servers; each SIGCONT, SIGTERM, then SIGKILL after a grace. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for run in self.writers:
            run.stop(timeout_s=STOP_GRACE_S)
        for name in sorted(self.procs, key=lambda n: not n.startswith("sentinel")):
            end_process(self.procs[name], grace_s=STOP_GRACE_S)
        for out in self._outputs:
            out.close()

    def __enter__(self) -> SentinelSystem:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- waiting for Sentinel -------------------------------------------------------------

    def master_address(self) -> str | None:
        """ "host:port" of the master as a sentinel names it (asked from namespace c)."""
        return self.observe.master_address()

    def wait_for_master(self, address: str, *, timeout_s: float = START_TIMEOUT_S) -> float:
        """Wait until every sentinel names ``address`` the master; returns the wall time."""
        what = f"every sentinel naming {address} the master"
        return self._wait(what, lambda: self.observe.sentinels_naming(address), timeout_s)

    def wait_replica_of(
        self, site: str, master: str, *, timeout_s: float = START_TIMEOUT_S
    ) -> float:
        """Wait until the redis at ``site`` replicates ``master`` with its link up (the
        resumed old primary, demoted by Sentinel); returns the wall time it was seen."""
        what = f"redis at {site} replicating {master}"
        return self._wait(what, lambda: self.observe.replica_problem(site, master), timeout_s)

    # -- faults: each returns its wall time (time.time()) ---------------------------------

    def _fault(self, kind: str, target: str, act: Callable[[], object]) -> float:
        at_s = time.time()
        act()
        self.events.append((at_s, kind, target))
        return at_s

    def kill_primary(self) -> float:
        """kill -9 the redis at a (reaped)."""
        self._killed.add("redis-a")
        return self._fault("kill", "redis-a", lambda: netns.crash(self.procs["redis-a"]))

    def pause_primary(self) -> float:
        """SIGSTOP the redis at a (a hang: the kernel still accepts connections)."""
        return self._fault("pause", "redis-a", lambda: netns.pause(self.procs["redis-a"]))

    def resume_primary(self) -> float:
        """SIGCONT the redis at a."""
        return self._fault("resume", "redis-a", lambda: netns.resume(self.procs["redis-a"]))

    def isolate(self, site: str) -> float:
        """Cut a site off the network (``Network.isolate``)."""
        return self._fault("isolate", site, lambda: self.net.isolate(site))

    def heal(self) -> float:
        """Undo every network fault (``Network.heal_all``)."""
        return self._fault("heal", "all", self.net.heal_all)

    # -- writers and judgement -----------------------------------------------------------

    def start_writers(
        self,
        duration_s: float,
        rate_per_s: float,
        history_path: Path,
        *,
        clients: Sequence[str] = CLIENT_KINDS,
    ) -> WriterRun:
        """Start the writer process in namespace c (each client writes ``rate_per_s``
        times a second for ``duration_s``); returns once every client has had a write
        acknowledged, so the sticky client holds a connection to the primary."""
        argv = [sys.executable, "-m", "failover.chaos.sentinel_writer"]
        for site in SENTINEL_SITES:
            argv += ["--sentinel", f"{self.net.addresses[site]}:{SENTINEL_PORT}"]
        argv += [
            f"--master-name={MASTER_NAME}",
            f"--duration-s={duration_s}",
            f"--rate-per-s={rate_per_s}",
            f"--history={history_path}",
            f"--clients={','.join(clients)}",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        history_path.parent.mkdir(parents=True, exist_ok=True)
        history_path.touch()
        err_path = history_path.with_name(history_path.name + ".stderr")
        with err_path.open("ab") as err:
            proc = self.net.popen(CLIENT_SITE, argv, stdout=err, stderr=err, env=env)
        run = WriterRun(proc=proc, history_path=history_path, stderr_path=err_path)
        self.writers.append(run)
        run.wait_acked(clients, timeout_s=WRITERS_READY_TIMEOUT_S)
        return run

    def analyse(
        self, history_path: Path, fault_at_wall_s: float, *, new_primary: str | None = None
    ) -> SentinelOutcome:
        """Judge a writer history (writers ended) after a fault at ``fault_at_wall_s``.
        The new primary defaults to the replica at b; the promotion time is the earliest
        ``+switch-master`` to it in the sentinel logs; the final keys are read from the
        server the sentinels name the master now."""
        new = new_primary or self.replica
        final_ids = self.observe.final_ids()
        if final_ids is None:
            raise SentinelError(
                f"Sentinel baseline: cannot read the final primary's keys (no sentinel names "
                f"a live master: {self.master_address()}); see the logs:\n{tail(self._logs())}"
            )
        return analyse(
            read_history(history_path),
            fault_at_wall_s,
            old_primary=self.primary,
            new_primary=new,
            promoted_at_wall_s=self.observe.promoted_at_wall_s(new),
            final_ids=final_ids,
        )
