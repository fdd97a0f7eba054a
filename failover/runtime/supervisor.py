"""Keeps one site's component instances running: start, restart crashed ones, give up on loops.

A thread, every ``poll_interval_s``, asks the Platform for the site's instances. An instance
that exited on its own is a crash: the restart policy (``failover.core.restarts``) says
when to restart it (a backoff that doubles per recent crash) or that it is crash-looping.
Then the supervisor stops restarting it, logs one ERROR line (event
``component_crash_looping``) and marks it given up on the platform; its shards stay at the
other site. Meanwhile the site agent's probes already see it down and the controller has
moved its shards: a restart is never on the critical path.

A version change (``Platform.set_version``) is not a crash: the platform reports the
instance ``STOPPED`` while the old version stops and ``RUNNING`` (a new pid) once the new
one runs, never ``EXITED``, and the supervisor only restarts ``EXITED`` instances. A
crashed instance is restarted at the version recorded last.

The site's instances are also published to the store as ``platform/<site>/instances``
(``{component: {state, restarts, given_up, pid}}``), created or compare-and-set whenever
they change; a store error is logged and the write retried at the next poll, never fatal.

``start()`` starts every instance from the supervisor's own thread and ``stop()`` stops
them before that thread ends (the local platform's children die with the thread that
started them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from failover import telemetry
from failover.core.restarts import CrashHistory, RestartTiming
from failover.ports import (
    Clock,
    Conflict,
    CoordinationStore,
    Instance,
    InstanceState,
    OutcomeUnknown,
    Platform,
    PlatformError,
    StoreUnavailable,
)

log = logging.getLogger("bfm.supervisor")

POLL_INTERVAL_S = 0.1


def instances_key(site: str) -> str:
    """The store key of a site's published instances."""
    return f"platform/{site}/instances"


class Supervisor:
    """Supervises every component instance of one site (see the module docstring)."""

    def __init__(
        self,
        platform: Platform,
        site: str,
        *,
        clock: Clock,
        store: CoordinationStore | None = None,
        timing: RestartTiming | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        components: Sequence[str] | None = None,
    ) -> None:
        """``components``: those to start and stop (default: every one the platform lists)."""
        self.platform, self.site, self.clock, self.store = platform, site, clock, store
        self.timing = timing or RestartTiming()
        self.poll_interval_s = poll_interval_s
        self.components = tuple(
            components
            if components is not None
            else (i.component for i in platform.instances(site))
        )
        self.errors = 0
        self._histories: dict[str, CrashHistory] = {}
        self._restart_at_s: dict[str, float] = {}  # component -> when its restart is due
        self._seen_crash: dict[str, str] = {}  # component -> instance id of its last crash
        self._unstarted: set[str] = set()  # to start at the next pass (start() fills it)
        self._start_failed: set[str] = set()
        self._published: dict[str, Any] | None = None
        self._snapshot: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the instances and the loop (in one thread, which also stops them)."""
        self._unstarted = set(self.components)
        self._thread = threading.Thread(
            target=self._run, name=f"{self.site}-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the loop; its thread stops every instance before it ends."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._guard(self.tick)
                self._stop.wait(self.poll_interval_s)
        finally:
            self._guard(lambda: self.platform.stop_site(self.site))
            self._guard(self._publish)

    def _guard(self, step: Any) -> None:
        try:
            step()
        except Exception:
            self.errors += 1
            log.exception("supervisor step failed", extra={"event": "error", "site": self.site})

    # --- one pass --------------------------------------------------------------------

    def tick(self) -> None:
        """One pass: note new crashes, restart those that are due, publish the instances."""
        for component in sorted(self._unstarted):  # first start, retried until it works
            if self._stop.is_set():
                return
            try:
                self.platform.start(self.site, component)
                self._unstarted.discard(component)
            except PlatformError as err:
                if component not in self._start_failed:  # one line, not one per pass
                    self._start_failed.add(component)
                    log.error(
                        f"could not start component {component}: {err}; retrying",
                        extra={"event": "start_failed", "site": self.site, "component": component},
                    )
        now_s = self.clock.monotonic()
        for instance in self.platform.instances(self.site):
            if self._stop.is_set():
                return
            self._supervise(instance, now_s)
        self._publish()

    def _supervise(self, instance: Instance, now_s: float) -> None:
        component = instance.component
        history = self._histories.setdefault(component, CrashHistory(self.timing))
        if instance.state is InstanceState.RUNNING and history.given_up:
            history.reset()  # started again by someone else: give it a fresh start
        if instance.state is not InstanceState.EXITED:
            self._restart_at_s.pop(component, None)
            return
        if self._seen_crash.get(component) != instance.instance_id:
            self._seen_crash[component] = instance.instance_id
            decision = history.crashed(now_s)
            if decision.give_up:
                self._restart_at_s.pop(component, None)
                self._give_up(instance, decision.crashes)
                return
            assert decision.restart_at_s is not None
            self._restart_at_s[component] = decision.restart_at_s
            log.warning(
                f"component {component} exited (code {instance.exit_code}); "
                f"restarting it in {decision.backoff_s:g} s",
                extra={
                    "event": "component_exited",
                    "site": self.site,
                    "component": component,
                    "exit_code": instance.exit_code,
                    "pid": instance.pid,
                    "crashes": decision.crashes,
                    "backoff_s": decision.backoff_s,
                },
            )
        due_s = self._restart_at_s.get(component)
        if due_s is not None and now_s >= due_s:
            del self._restart_at_s[component]
            try:
                restarted = self.platform.restart(self.site, component)
            except PlatformError as err:
                del self._seen_crash[component]  # counts as one more crash at the next pass
                log.error(
                    f"could not restart component {component}: {err}",
                    extra={"event": "restart_failed", "site": self.site, "component": component},
                )
                return
            telemetry.COMPONENT_RESTARTS.labels(self.site, component).inc()
            log.info(
                f"component {component} restarted (pid {restarted.pid})",
                extra={
                    "event": "component_restarted",
                    "site": self.site,
                    "component": component,
                    "pid": restarted.pid,
                    "restarts": restarted.restarts,
                },
            )

    def _give_up(self, instance: Instance, crashes: int) -> None:
        window_s = self.timing.crash_window_s
        self.platform.give_up(self.site, instance.component)
        log.error(
            f"component {instance.component} at site {self.site} is crash-looping "
            f"({crashes} crashes in {window_s:g} s): not restarting it; its shards stay "
            f"at the other site until it is started again",
            extra={
                "event": "component_crash_looping",
                "site": self.site,
                "component": instance.component,
                "crashes": crashes,
                "window_s": window_s,
                "exit_code": instance.exit_code,
            },
        )

    # --- the store document ----------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The instances as last published (component -> state, restarts, given_up, pid)."""
        return dict(self._snapshot)

    def _publish(self) -> None:
        doc = {
            i.component: {
                "state": i.state.value,
                "restarts": i.restarts,
                "given_up": i.given_up,
                "pid": i.pid,
            }
            for i in self.platform.instances(self.site)
        }
        self._snapshot = doc
        if self.store is None or doc == self._published:
            return
        key = instances_key(self.site)
        try:
            current = self.store.get(key)
            if current is None:
                self.store.create(key, doc)
            else:
                self.store.compare_and_set(key, doc, expected_revision=current.revision)
            self._published = doc
        except (StoreUnavailable, OutcomeUnknown, Conflict) as err:
            # Retried at the next poll: _published still differs from the document.
            log.warning(
                f"could not publish the instances of site {self.site}: {err}",
                extra={"event": "store_error", "site": self.site, "key": key},
            )
