"""Start and stop a local etcd cluster (Debian ``etcd-server``) for tests and local harnesses.

:class:`EtcdCluster` runs ``size`` members on one host with free client and peer ports and a
data directory each under ``base_dir``, waits (bounded) until every member reports healthy,
and stops every member it started by PID (SIGCONT, SIGTERM, SIGKILL after a grace period),
also when start-up fails. Single members can be killed, paused, resumed and restarted, which
is what the store's failure tests and the later three-site harness need.

Timing (see ``docs/etcd.md``): etcd's defaults, heartbeat 100 ms and election timeout
1000 ms, with ``--pre-vote`` (off in etcd 3.4). A longer election timeout rides out CPU
stalls better, but when the leader's site is cut off, no site has a store until the others
elect a new leader (1-2 s with these values, 2-4 s with 200/2000): the partition runs
chose the shorter gap. Pre-vote keeps a member that returns from a cut, or merely missed
heartbeats, from deposing a healthy leader. Members may also run at addresses of their
own (``MemberPlace``: fixed ports, an argv prefix such as ``ip netns exec <ns>``), with the
health probes run where those addresses are reachable (``probe_in``).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from failover.adapters.tls import TlsFiles

T = TypeVar("T")

HEARTBEAT_INTERVAL_MS = 100
ELECTION_TIMEOUT_MS = 1000
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
_PROBE_TIMEOUT_S = 1.0
_START_ATTEMPTS = 3  # free ports are picked, then bound by etcd: another process may win one


class EtcdClusterError(RuntimeError):
    """The cluster could not be started (the message names the member and its log)."""


CLIENT_PORT = 2379
PEER_PORT = 2380


@dataclass(frozen=True)
class MemberPlace:
    """Where one member runs when it is not on a free port of one host: its own address
    (e.g. a site's network namespace), fixed ports, and the argv prefix that starts a
    process there (``ip netns exec <ns>``; the prefix must exec, so the PID stays etcd's)."""

    host: str
    argv_prefix: tuple[str, ...] = ()
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT


@dataclass
class EtcdMember:
    """One member: its ports, data directory, log file and (while running) its process."""

    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    argv_prefix: tuple[str, ...] = ()
    scheme: str = "http"  # https when the cluster serves its clients over TLS

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL, as the ``etcd://`` store URL lists it."""
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def etcd_binary() -> str | None:
    """The ``etcd`` executable on PATH (Debian: ``apt-get install etcd-server``), or None."""
    return shutil.which("etcd")


def _free_ports(host: str, count: int) -> list[int]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class EtcdCluster:
    """``size`` etcd members on ``host``; use as a context manager so they always stop."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        size: int = 3,
        host: str = "127.0.0.1",
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        election_timeout_ms: int = ELECTION_TIMEOUT_MS,
        binary: str | None = None,
        places: Sequence[MemberPlace] | None = None,
        probe_in: Callable[[Callable[[], Any]], Any] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """``places``: one per member (``size`` is then their number), for members on
        addresses of their own; ``probe_in`` runs each health or status probe (e.g. inside
        a network namespace: ``NamespaceThread.call``), default here in this thread.
        ``tls``: serve clients over TLS with these files and demand client certificates
        from the same CA (peers talk plain HTTP among themselves)."""
        if places is not None:
            size = len(places)
        if size < 1:
            raise ValueError(f"bfm: an etcd cluster needs at least one member, got {size}")
        found = binary or etcd_binary()
        if found is None:
            raise EtcdClusterError(
                "bfm: etcd is not installed (Debian: apt-get install -y etcd-server)"
            )
        self._binary = found
        self._base_dir = Path(base_dir)
        self._size = size
        self._host = host
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._election_timeout_ms = election_timeout_ms
        self._token = f"bfm-{uuid.uuid4().hex[:12]}"
        self._places = list(places) if places is not None else None
        self._probe_in = probe_in
        self.tls = tls
        self._probe_tls = tls.client_context() if tls else None
        self.members: list[EtcdMember] = []

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- facts -----------------------------------------------------------------------------

    @property
    def endpoints(self) -> builtins.list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """The ``etcd://host:port,...`` store URL naming every member."""
        return "etcd://" + ",".join(self.endpoints)

    # -- start / stop ----------------------------------------------------------------------

    def start(self, *, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start every member and wait until all are healthy; stop them all if that fails."""
        last_error: EtcdClusterError | None = None
        for attempt in range(_START_ATTEMPTS):
            self._plan(attempt)
            try:
                for member in self.members:
                    self._spawn(member)
                self.wait_healthy(timeout_s=timeout_s)
                return
            except EtcdClusterError as exc:
                self.stop()
                last_error = exc
                if "address already in use" not in str(exc):
                    raise
            except BaseException:
                self.stop()
                raise
        assert last_error is not None
        raise last_error

    def _plan(self, attempt: int) -> None:
        places = self._places
        if places is None:
            ports = _free_ports(self._host, 2 * self._size)
            places = [
                MemberPlace(self._host, (), ports[2 * i], ports[2 * i + 1])
                for i in range(self._size)
            ]
        self.members = []
        for index, place in enumerate(places):
            name = f"m{index}"
            directory = self._base_dir / f"try{attempt}" / name
            directory.mkdir(parents=True, exist_ok=True)
            self.members.append(
                EtcdMember(
                    name=name,
                    host=place.host,
                    client_port=place.client_port,
                    peer_port=place.peer_port,
                    data_dir=directory / "data",
                    log_path=directory / "etcd.log",
                    argv_prefix=place.argv_prefix,
                    scheme="https" if self.tls else "http",
                )
            )

    def _command(self, member: EtcdMember) -> builtins.list[str]:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            self._binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self._token}",
            f"--heartbeat-interval={self._heartbeat_interval_ms}",
            f"--election-timeout={self._election_timeout_ms}",
            # A member cut off from the others keeps calling elections with ever higher
            # terms; without pre-vote, its return deposes the healthy leader (seconds
            # without a store). Default from etcd 3.5 on; 3.4 (Debian's) needs the flag.
            "--pre-vote=true",
            "--logger=zap",
            "--log-level=warn",
            *self._tls_flags(),
        ]

    def _tls_flags(self) -> builtins.list[str]:
        if self.tls is None:
            return []
        return [
            f"--cert-file={self.tls.cert}",
            f"--key-file={self.tls.key}",
            f"--trusted-ca-file={self.tls.ca}",
            "--client-cert-auth=true",
        ]

    def _spawn(self, member: EtcdMember) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with member.log_path.open("ab") as log:
            member.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [*member.argv_prefix, *self._command(member)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_healthy(
        self, *, timeout_s: float = START_TIMEOUT_S, members: builtins.list[int] | None = None
    ) -> None:
        """Wait until every running member (or those at ``members``) answers /health true."""
        wanted = [self.members[i] for i in members] if members is not None else self.members
        deadline_s = time.monotonic() + timeout_s
        while True:
            pending = []
            for member in wanted:
                if member.process is not None and member.process.poll() is not None:
                    raise EtcdClusterError(
                        f"bfm: etcd member {member.name} exited with code "
                        f"{member.process.returncode} while starting; its log "
                        f"({member.log_path}) ends:\n{member.log_tail()}"
                    )
                if not self._healthy(member):
                    pending.append(member.name)
            if not pending:
                return
            if time.monotonic() >= deadline_s:
                raise EtcdClusterError(
                    f"bfm: etcd members {', '.join(pending)} were not healthy within "
                    f"{timeout_s} s; logs under {self._base_dir}"
                )
            time.sleep(0.1)

    def _probe(self, work: Callable[[], T]) -> T:
        if self._probe_in is None:
            return work()
        result: T = self._probe_in(work)
        return result

    def _healthy(self, member: EtcdMember) -> bool:
        return self._probe(lambda: self._healthy_here(member))

    def _healthy_here(self, member: EtcdMember) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - http URL built from our own ports
                f"{member.client_url}/health", timeout=_PROBE_TIMEOUT_S, context=self._probe_tls
            ) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def leader(self) -> int | None:
        """Index of the member that is leader now, by asking the members; None if unknown."""
        ids: dict[str, int] = {}
        leaders: set[str] = set()
        for index, member in enumerate(self.members):
            status = self._status(member) if member.running() else None
            if status is None:
                continue
            ids[str(status.get("header", {}).get("member_id"))] = index
            leaders.add(str(status.get("leader")))
        found = [ids[leader] for leader in leaders if leader in ids]
        return found[0] if len(found) == 1 else None

    def _status(self, member: EtcdMember) -> dict[str, Any] | None:
        return self._probe(lambda: self._status_here(member))

    def _status_here(self, member: EtcdMember) -> dict[str, Any] | None:
        request = urllib.request.Request(  # noqa: S310 - http URL built from our own ports
            f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=_PROBE_TIMEOUT_S, context=self._probe_tls
            ) as response:
                status: dict[str, Any] = json.loads(response.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return status

    def kill(self, index: int) -> None:
        """SIGKILL one member and reap it (its data directory stays for :meth:`restart`)."""
        member = self.members[index]
        if member.process is not None and member.process.poll() is None:
            member.process.kill()
            member.process.wait(STOP_GRACE_S)

    def pause(self, index: int) -> None:
        """SIGSTOP one member: it keeps its sockets but answers nothing."""
        self._signal(index, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """SIGCONT a paused member."""
        self._signal(index, signal.SIGCONT)

    def _signal(self, index: int, signum: signal.Signals) -> None:
        member = self.members[index]
        if member.process is not None and member.process.poll() is None:
            os.kill(member.process.pid, signum)

    def restart(self, index: int, *, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start a killed or stopped member again on its data directory; wait until healthy."""
        member = self.members[index]
        if member.running():
            return
        self._spawn(member)
        self.wait_healthy(timeout_s=timeout_s, members=[index])

    def stop(self, *, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every member this cluster started, by PID: SIGTERM, SIGKILL after ``grace_s``.

        One member at a time: members told to stop all at once keep trying to hand the
        leadership to each other, and each waits out its grace period.
        """
        for member in self.members:
            process = member.process
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # a paused member cannot act on SIGTERM
                process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(grace_s)
