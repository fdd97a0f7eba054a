"""Ports: the Protocols the runtime uses to reach outside systems (store, clock, platform).

The coordination store contract (ARCHITECTURE.md section 7), which every backend passes
through the shared contract tests in ``tests/unit/test_store_contract.py``:

- A key holds one JSON document (a mapping). Writes are single-key compare-and-set on the
  key's *revision*, an opaque string compared only for equality.
- Leases are ordinary documents (holder, renew count, duration); their expiry is judged by
  the reader on its own monotonic clock (``failover.core.quorum``), never by the store.
- Errors are three distinct exceptions: ``StoreUnavailable`` (the request did not reach the
  store, nothing was written), ``Conflict`` (the compare-and-set lost), ``OutcomeUnknown``
  (a write was sent and its result is unknown). The failsafe logic relies on the difference.
- Watching is by polling where the backend has no watch; the interval is a named setting.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from failover.core.licensing import DongleEvidence
from failover.core.versions import DEFAULT_VERSION

JsonDoc = Mapping[str, Any]


class StoreError(Exception):
    """Base of the three coordination-store errors."""


class StoreUnavailable(StoreError):
    """The store could not be reached; the operation had no effect."""


class Conflict(StoreError):
    """A compare-and-set lost: the key's revision was not the expected one."""


class OutcomeUnknown(StoreError):
    """A write was sent but its result is unknown (it may or may not have been applied)."""


@dataclass(frozen=True)
class Versioned:
    """One key's document and its opaque revision."""

    key: str
    value: JsonDoc
    revision: str


@runtime_checkable
class CoordinationStore(Protocol):
    """Single-key compare-and-set document store shared by all sites."""

    @property
    def url(self) -> str:
        """The store URL (``memory://``, ``sqlite:///path``, ...), for messages and the run dir."""
        ...

    def get(self, key: str) -> Versioned | None:
        """The key's document and revision, or None when the key does not exist."""
        ...

    def list(self, prefix: str) -> builtins.list[Versioned]:
        """Every key starting with ``prefix``, sorted by key."""
        ...

    def create(self, key: str, value: JsonDoc) -> str:
        """Write a new key; returns its revision. ``Conflict`` when the key exists."""
        ...

    def compare_and_set(self, key: str, value: JsonDoc, *, expected_revision: str) -> str:
        """Replace the key's document if its revision equals ``expected_revision``.

        Returns the new revision. ``Conflict`` when the key is missing or its revision
        differs.
        """
        ...

    def delete(self, key: str, *, expected_revision: str) -> None:
        """Delete the key if its revision equals ``expected_revision``, else ``Conflict``."""
        ...

    def wait_for_change(
        self, prefix: str, known: Mapping[str, str], *, timeout_s: float
    ) -> builtins.list[Versioned]:
        """Block until the keys under ``prefix`` differ from ``known`` (key -> revision).

        Returns the current listing as soon as any key was added, changed or deleted, or
        after ``timeout_s`` in any case. Backends without a native watch poll every
        ``poll_interval_s``.
        """
        ...

    def close(self) -> None:
        """Release connections; the store's data is untouched."""
        ...


class Clock(Protocol):
    """Time as the runtime sees it: monotonic seconds for durations, wall time for records."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences are meaningful."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for timestamps written into documents only."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a fake clock advances instead)."""
        ...


class Dongle(Protocol):
    """This site's license dongle: locally a signed file, in Kubernetes a mounted Secret.

    ``read`` never raises on bad content: a missing, tampered, foreign, expired or
    malformed dongle is evidence with that status and a reason naming the fix
    (``failover.core.licensing``)."""

    def read(self, now_wall_s: float) -> DongleEvidence:
        """What the dongle shows at wall time ``now_wall_s``."""
        ...


# --- Platform: the contract is in the docstring of ``Platform`` below. ---------------


class PlatformError(Exception):
    """The platform could not carry out an operation (for example: it was closed)."""


class InstanceState(StrEnum):
    """What a component instance is doing, as the platform sees it now."""

    RUNNING = "running"  # started and not exited (a paused process is still running)
    EXITED = "exited"  # ended without being asked to: crashed or killed (see exit_code)
    STOPPED = "stopped"  # never started, or stopped on request
    GIVEN_UP = "given_up"  # crash-looping: the supervisor stopped restarting it


@dataclass(frozen=True)
class Instance:
    """One component instance at one site."""

    site: str
    component: str
    state: InstanceState
    restarts: int
    pid: int | None = None  # the local process (None where the platform has no pids)
    instance_id: str = ""  # pid as text locally, the pod name on Kubernetes; "" never started
    exit_code: int | None = None  # EXITED/GIVEN_UP: the code; negative: killed by that signal
    version: str = DEFAULT_VERSION  # the version it runs, or runs at its next start

    @property
    def given_up(self) -> bool:
        return self.state is InstanceState.GIVEN_UP

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "pid": self.pid,
            "instance_id": self.instance_id,
            "exit_code": self.exit_code,
            "restarts": self.restarts,
            "given_up": self.given_up,
            "version": self.version,
        }


@dataclass(frozen=True)
class NodeFacts:
    """One node of a site (a host, or a Kubernetes node)."""

    name: str
    reachable: bool


@dataclass(frozen=True)
class SiteFacts:
    """One site as the platform knows it: role, components it runs, nodes."""

    site: str
    role: str  # "worker" or "witness" (failover.core.topology.SiteRole values)
    components: tuple[str, ...]
    nodes: tuple[NodeFacts, ...]

    @property
    def reachable(self) -> bool:
        """At least one node of the site can be reached."""
        return any(n.reachable for n in self.nodes)


@runtime_checkable
class Platform(Protocol):
    """Runs the components of the worker sites: start, stop, restart, route, facts.

    The contract (ARCHITECTURE.md section 4), which every platform passes through the
    shared contract tests in ``tests/unit/test_platform_contract.py`` (local processes now,
    Kubernetes later):

    - A *component instance* is one component (``backbone``, ``eap``, ...) at one worker
      site: a subprocess on the local platform, a pod on Kubernetes. ``start``, ``stop``
      and ``restart`` act on it and return it as it is afterwards. ``instances`` reports
      what is true now: an instance that died on its own is ``EXITED`` (with its exit
      code) at the next call, never ``RUNNING``.
    - The platform never restarts anything by itself. The supervisor
      (``failover.runtime.supervisor``) decides by the restart policy
      (``failover.core.restarts``) and calls ``restart``; when the policy gives up it calls
      ``give_up`` and the instance stays down (``GIVEN_UP``) until it is started again.
      ``restarts`` counts the calls of ``restart`` since the platform was created.
    - ``stop`` is a clean stop (SIGTERM, or the pod's grace period), forced after
      ``timeout_s``; it returns once the instance is gone. A stopped instance is not
      restarted by the supervisor: only ``EXITED`` ones are.
    - Every instance runs one *version* (``failover.core.versions``; ``DEFAULT_VERSION``
      unless the platform was given another), reported as ``Instance.version`` and by
      ``version``. ``set_version`` records the version every later start and restart
      uses. A ``RUNNING`` instance at another version is replaced: stopped cleanly like
      ``stop``, then started at the new version as a new instance (new ``instance_id``;
      ``restarts`` unchanged). While it changes it is ``STOPPED``, never ``EXITED``, so
      the supervisor neither counts a crash nor restarts the old version. An instance
      that is not running (``STOPPED``, ``EXITED``, ``GIVEN_UP``) only has the version
      recorded: ``set_version`` starts nothing. The same version again changes nothing.
      A version that ``check_version`` refuses is a ``ValueError`` with its message.
    - ``route(site, serving=...)`` says whether a site's entry point takes client traffic
      (Kubernetes: a pod label its Services select; local: a JSON file in the run
      directory); ``routing(site)`` reads it back; a site never routed serves.
    - ``sites()`` gives the facts the platform knows: each site's role, components, nodes
      and whether they can be reached.
    - A site or component the platform does not know, or a site it does not run, is a
      ``ValueError`` whose message names it; an operation the platform cannot carry out
      (it was closed, a start failed) is a ``PlatformError``.
    """

    def start(self, site: str, component: str) -> Instance:
        """Start the instance unless it is running; returns it (``RUNNING``)."""
        ...

    def stop(self, site: str, component: str, *, timeout_s: float = 5.0) -> Instance:
        """Stop the instance cleanly (forced after ``timeout_s``); returns it (``STOPPED``)."""
        ...

    def stop_site(self, site: str, *, timeout_s: float = 5.0) -> builtins.list[Instance]:
        """Stop every instance of a site at once (each forced after ``timeout_s``)."""
        ...

    def restart(self, site: str, component: str, *, timeout_s: float = 5.0) -> Instance:
        """Stop the instance if it runs, start it again, count one restart; returns it."""
        ...

    def give_up(self, site: str, component: str) -> Instance:
        """Mark the instance crash-looping: it stays down until started again."""
        ...

    def set_version(
        self, site: str, component: str, version: str, *, timeout_s: float = 5.0
    ) -> Instance:
        """Run ``version`` from now on: a running instance at another version is stopped
        cleanly (forced after ``timeout_s``) and started at it; one that is not running
        only has it recorded for its next start. Returns the instance."""
        ...

    def version(self, site: str, component: str) -> str:
        """The version the instance runs, or runs at its next start."""
        ...

    def instance(self, site: str, component: str) -> Instance:
        """The instance as it is now."""
        ...

    def instances(self, site: str) -> builtins.list[Instance]:
        """Every component instance of a site as it is now, sorted by component."""
        ...

    def route(self, site: str, *, serving: bool) -> None:
        """Let the site's entry point take client traffic (``serving``) or not."""
        ...

    def routing(self, site: str) -> bool:
        """Whether the site's entry point takes client traffic (True if never routed)."""
        ...

    def sites(self) -> builtins.list[SiteFacts]:
        """Every site with its role, components and nodes, sorted by site."""
        ...

    def close(self) -> None:
        """Stop every instance this platform started; later starts raise PlatformError."""
        ...


@dataclass(frozen=True)
class SiteNodes:
    """A site's nodes as the platform sees them, for isolating a dead site."""

    site: str
    nodes: int
    up: int  # seen alive by the platform itself (Kubernetes: Ready, node Lease renewed)
    isolated: int  # carrying the out-of-service mark (Kubernetes: the out-of-service taint)


@runtime_checkable
class NodeIsolation(Protocol):
    """Marks a dead site's nodes out of service, so that the platform releases what they
    held (Kubernetes: the ``node.kubernetes.io/out-of-service`` taint force-deletes their
    pods and detaches their volumes), and takes the mark off when they are back.

    ``failover.runtime.site_isolation`` decides when; errors are ``PlatformError``."""

    def site_nodes(self) -> builtins.list[SiteNodes]:
        """Every site with nodes, sorted by site."""
        ...

    def isolate(self, site: str) -> builtins.list[str]:
        """Mark every node of ``site``; the names of those that were not marked yet."""
        ...

    def release(self, site: str) -> builtins.list[str]:
        """Unmark every node of ``site``; the names of those that were marked."""
        ...
