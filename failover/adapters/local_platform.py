"""The local Platform: each component instance is a real ``python -m failover`` subprocess.

One ``LocalPlatform`` runs the components of the sites it is given (a site process gives
its own site). It remembers every child by its ``Popen`` and ends only those, writes each
child's stderr to ``<run_dir>/comp-<site>-<component>.log``, and after every change writes
``<run_dir>/instances-<site>.json`` (``{component: {pid, state, restarts, given_up,
version, ...}}``) atomically, so tools and the demo find the PIDs. Routing is a JSON file
per site, ``<run_dir>/routing-<site>.json`` (``{"site", "serving"}``), for the site's
entry point.

A version is a different process: the default command runs ``component run`` with
``--version=<v>``, and ``set_version`` replaces a running child by one at the new version.
Changes of one instance (start, stop, restart, give up, set version) take turns: a restart
or a stop that comes while a version change stops the old child waits for it, so two
children of one instance never run at once and a stop is never undone. The platform-wide
lock is not held while a child stops, so ``instances`` keeps answering meanwhile.

Children must not outlive their parent: each is started with ``PR_SET_PDEATHSIG=SIGKILL``
(Linux ``prctl``, set in the child between fork and exec), so a kill -9 of the site process
takes its components with it, as a node loss takes its pods. Linux sends that signal when
the *thread* that started the child ends, so children are started by long-lived threads
(the supervisor's loop, which stops them before it ends, or the main thread).

Every site is one node on this host and reachable; sites in network namespaces (for real
partitions, ARCHITECTURE.md section 4) would report their link state here.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from failover.adapters.files import write_text_atomically
from failover.adapters.platform_sites import PlatformSites
from failover.core.topology import Topology
from failover.core.versions import DEFAULT_VERSION, check_version
from failover.ports import (
    Instance,
    InstanceState,
    NodeFacts,
    PlatformError,
    SiteFacts,
)

STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_SIGKILL = int(signal.SIGKILL)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once, before any fork: the child then only calls a ready function pointer.
_PRCTL = _load_prctl()


def die_with_parent(parent_pid: int) -> None:
    """``preexec_fn`` body for children that must die (SIGKILL) when their parent ends.

    It runs in the child between fork and exec, where only async-signal-safe work is
    safe: one call through a function pointer resolved at import, no imports, no locks.
    A parent that died before the call is caught by the ``getppid`` check after it.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)


def child_setup() -> Callable[[], None]:
    """The ``preexec_fn`` to pass to ``subprocess.Popen`` for a child that dies with us."""
    return functools.partial(die_with_parent, os.getpid())


def instances_path(run_dir: Path, site: str) -> Path:
    return run_dir / f"instances-{site}.json"


def routing_path(run_dir: Path, site: str) -> Path:
    return run_dir / f"routing-{site}.json"


def read_instances(run_dir: Path, site: str) -> dict[str, dict[str, Any]]:
    """The last ``instances-<site>.json`` (component -> fields); empty when there is none."""
    try:
        data = json.loads(instances_path(run_dir, site).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ValueError(f"{instances_path(run_dir, site)} is malformed ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{instances_path(run_dir, site)} is not a JSON object")
    return {str(c): dict(v) for c, v in data.items() if isinstance(v, dict)}


def read_routing(run_dir: Path, site: str) -> bool:
    """Whether the site's entry point takes client traffic (True until routed otherwise)."""
    path = routing_path(run_dir, site)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is malformed ({err}); route the site again") from None
    serving = data.get("serving") if isinstance(data, dict) else None
    if not isinstance(serving, bool):
        raise ValueError(f"{path}: 'serving' must be true or false, got {serving!r}")
    return serving


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True))


@dataclass
class _Slot:
    """One component instance's process and bookkeeping."""

    version: str  # what the process runs, or the next one will
    proc: subprocess.Popen[bytes] | None = None
    wanted: bool = False  # asked to run: an exit while wanted is a crash
    restarts: int = 0
    given_up: bool = False
    # Held through each change of this instance, stop included; taken before ``_lock``.
    changing: threading.Lock = field(default_factory=threading.Lock)


class LocalPlatform:
    """Platform port with local subprocesses (see the module docstring)."""

    def __init__(
        self,
        run_dir: Path,
        topology: Topology,
        *,
        sites: Collection[str] | None = None,
        env: Mapping[str, str] | None = None,
        command: Callable[[str, str], Sequence[str]] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        """Run the components of ``sites`` (default: every worker site of ``topology``).

        ``versions``: component -> the version its instances start at (default
        ``DEFAULT_VERSION`` each). ``command(site, component)`` gives the arguments after
        ``python -m failover``; the default is ``component run --site=S --component=C
        --run-dir=D --version=V``. A custom command is called at each start, after a new
        version was recorded, so one that passes the version reads it there with
        ``platform.version(site, component)``.
        """
        self.run_dir, self.topology = run_dir, topology
        self.names = PlatformSites(topology, sites, versions)
        self.managed = self.names.managed
        initial = dict(versions or {})
        self.env = {**os.environ, **(env or {})}
        self._command = command or self._component_run
        self._lock = threading.RLock()
        self._closed = False
        self._slots = {
            (s, c): _Slot(version=initial.get(c, DEFAULT_VERSION))
            for s in self.managed
            for c in topology.components
        }
        self._written: dict[str, str] = {}
        for site in self.managed:
            self._publish(site)

    # --- instances -------------------------------------------------------------------

    def start(self, site: str, component: str) -> Instance:
        slot = self._slot(site, component)
        with slot.changing, self._lock:
            if self._closed:
                raise PlatformError(f"cannot start {site}/{component}: the platform was closed")
            if slot.proc is None or slot.proc.poll() is not None:
                self._spawn(site, component, slot)
            slot.wanted, slot.given_up = True, False
            return self._publish_one(site, component)

    def stop(self, site: str, component: str, *, timeout_s: float = STOP_TIMEOUT_S) -> Instance:
        slot = self._slot(site, component)
        with slot.changing:
            with self._lock:
                slot.wanted = False
                proc = slot.proc
                _terminate(proc)
            _wait_or_kill(proc, timeout_s)
            with self._lock:
                return self._publish_one(site, component)

    def stop_site(self, site: str, *, timeout_s: float = STOP_TIMEOUT_S) -> list[Instance]:
        self.names.check_managed(site)
        with self._changing_all(site):
            with self._lock:
                procs = []
                for c in self.topology.components:
                    slot = self._slots[(site, c)]
                    slot.wanted = False
                    _terminate(slot.proc)
                    procs.append(slot.proc)
            for proc in procs:
                _wait_or_kill(proc, timeout_s)
            with self._lock:
                self._publish(site)
                return self._instances(site)

    def restart(self, site: str, component: str, *, timeout_s: float = STOP_TIMEOUT_S) -> Instance:
        slot = self._slot(site, component)
        closed = f"cannot restart {site}/{component}: the platform was closed"
        with slot.changing:
            with self._lock:
                if self._closed:
                    raise PlatformError(closed)
                old = slot.proc
                slot.wanted = False  # its exit is asked for, not a crash
                _terminate(old)
            _wait_or_kill(old, timeout_s)
            with self._lock:
                if self._closed:
                    raise PlatformError(closed)
                self._spawn(site, component, slot)  # at the slot's version: restarts keep it
                slot.wanted, slot.given_up = True, False
                slot.restarts += 1
                return self._publish_one(site, component)

    def give_up(self, site: str, component: str) -> Instance:
        slot = self._slot(site, component)
        with slot.changing:
            with self._lock:
                slot.given_up = True
                slot.wanted = False
                proc = slot.proc
            _wait_or_kill(proc, STOP_TIMEOUT_S)  # normally exited already: it kept crashing
            with self._lock:
                return self._publish_one(site, component)

    def set_version(
        self, site: str, component: str, version: str, *, timeout_s: float = STOP_TIMEOUT_S
    ) -> Instance:
        """Run ``version`` from now on (see ``Platform.set_version``).

        A running child at another version is stopped like ``stop`` and a new one started
        at ``version`` by the calling thread, which must outlive it (module docstring).
        """
        slot = self._slot(site, component)
        check_version(version)
        with slot.changing:
            with self._lock:
                if version == slot.version:
                    return self._publish_one(site, component)
                running = self._instance(site, component).state is InstanceState.RUNNING
                if running and self._closed:
                    raise PlatformError(
                        f"cannot change {site}/{component} to version {version}: "
                        "the platform was closed"
                    )
                slot.version = version
                if not running:
                    return self._publish_one(site, component)
                # STOPPED, not EXITED, until the new child runs: the supervisor leaves it be.
                slot.wanted = False
                old = slot.proc
                _terminate(old)
                self._publish(site)
            _wait_or_kill(old, timeout_s)
            with self._lock:
                if self._closed:
                    raise PlatformError(
                        f"cannot start {site}/{component} at version {version}: "
                        "the platform was closed"
                    )
                self._spawn(site, component, slot)
                slot.wanted = True
                return self._publish_one(site, component)

    def version(self, site: str, component: str) -> str:
        slot = self._slot(site, component)
        with self._lock:
            return slot.version

    def instance(self, site: str, component: str) -> Instance:
        self._slot(site, component)
        with self._lock:
            return self._publish_one(site, component)

    def instances(self, site: str) -> list[Instance]:
        with self._lock:
            self.names.check_managed(site)
            listed = self._instances(site)
            self._publish(site)  # after: the file is never older than what is returned
            return listed

    # --- routing and facts -----------------------------------------------------------

    def route(self, site: str, *, serving: bool) -> None:
        self.names.check_entry_point(site)
        write_json_atomically(routing_path(self.run_dir, site), {"site": site, "serving": serving})

    def routing(self, site: str) -> bool:
        self.names.check_entry_point(site)
        return read_routing(self.run_dir, site)

    def sites(self) -> list[SiteFacts]:
        return [
            SiteFacts(
                site=s.name,
                role=s.role.value,
                components=self.topology.components if self.topology.is_worker(s.name) else (),
                nodes=(NodeFacts(name=f"local-{s.name}", reachable=True),),
            )
            for s in sorted(self.topology.sites, key=lambda s: s.name)
        ]

    def close(self) -> None:
        """Stop every instance cleanly; later starts and restarts raise PlatformError."""
        with self._lock:
            self._closed = True
        for site in self.managed:
            self.stop_site(site)

    # --- internals -------------------------------------------------------------------

    def _component_run(self, site: str, component: str) -> Sequence[str]:
        return (
            "component",
            "run",
            f"--site={site}",
            f"--component={component}",
            f"--run-dir={self.run_dir}",
            f"--version={self._slots[(site, component)].version}",
        )

    def _spawn(self, site: str, component: str, slot: _Slot) -> None:
        args = [sys.executable, "-m", "failover", *self._command(site, component)]
        try:
            with (self.run_dir / f"comp-{site}-{component}.log").open("ab") as log:
                slot.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=self.env,
                    preexec_fn=child_setup(),  # noqa: PLW1509 - one prctl call, see there
                )
        except OSError as err:
            raise PlatformError(f"cannot start {site}/{component}: {err}") from err

    @contextmanager
    def _changing_all(self, site: str) -> Iterator[None]:
        """Every instance of ``site`` held for one change (in one order: no deadlock)."""
        with ExitStack() as stack:
            for c in sorted(self.topology.components):
                stack.enter_context(self._slots[(site, c)].changing)
            yield

    def _slot(self, site: str, component: str) -> _Slot:
        """The instance's slot; ValueError naming an unknown site or component."""
        self.names.check_managed(site)
        slot = self._slots.get((site, component))
        if slot is None:
            raise self.names.unknown_component(site, component)
        return slot

    def _instance(self, site: str, component: str) -> Instance:
        slot = self._slots[(site, component)]
        proc = slot.proc
        code = proc.poll() if proc is not None else None
        pid = proc.pid if proc is not None else None
        if slot.given_up:
            state = InstanceState.GIVEN_UP
        elif proc is None or not slot.wanted:
            state = InstanceState.STOPPED
        elif code is None:
            state = InstanceState.RUNNING
        else:
            state = InstanceState.EXITED
        return Instance(
            site=site,
            component=component,
            state=state,
            restarts=slot.restarts,
            pid=pid,  # the last process's, also once it ended: logs and tools name it
            instance_id=str(pid) if pid is not None else "",
            exit_code=code,
            version=slot.version,
        )

    def _instances(self, site: str) -> list[Instance]:
        return [self._instance(site, c) for c in sorted(self.topology.components)]

    def _publish_one(self, site: str, component: str) -> Instance:
        """The instance as it is now, and the file written after that: a child's exit seen
        here is in the file too (``poll`` never goes back from exited to running)."""
        instance = self._instance(site, component)
        self._publish(site)
        return instance

    def _publish(self, site: str) -> None:
        """Rewrite ``instances-<site>.json`` if anything in it changed."""
        data = {i.component: i.to_json() for i in self._instances(site)}
        text = json.dumps(data, sort_keys=True)
        if self._written.get(site) != text:
            write_json_atomically(instances_path(self.run_dir, site), data)
            self._written[site] = text


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, and SIGCONT so that a paused child sees it."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)


def _wait_or_kill(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


if TYPE_CHECKING:
    from failover.ports import Platform

    def _conforms(platform: LocalPlatform) -> Platform:
        return platform
