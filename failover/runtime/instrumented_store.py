"""A coordination store that measures every request it passes on.

``InstrumentedStore(store, site=..., component=...)`` is a ``CoordinationStore`` itself:
each call goes to ``store`` unchanged, and its duration lands in
``bfm_store_request_duration_seconds{site, component, op, outcome}``, where ``outcome`` is
``ok`` (an answer, a missing key included), ``conflict``, ``unavailable``, ``unknown``
(``OutcomeUnknown``) or ``error`` (any other exception: a bug, re-raised as it is).
``bfm_store_reachable{site, component}`` is 1 after a request that got an answer (ok or
conflict) and 0 after one that did not (unavailable or unknown).

Several wrappers may share one underlying store (a site process wraps it once for its
agent, once for its controller replica); ``close`` closes the underlying store, so only
its owner should call it. ``wait_for_change`` blocks by design, so it is not timed; it
only says whether the store answered.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from failover import telemetry
from failover.ports import (
    Conflict,
    CoordinationStore,
    JsonDoc,
    OutcomeUnknown,
    StoreUnavailable,
    Versioned,
)

T = TypeVar("T")


class InstrumentedStore:
    """``store`` with every request timed and counted (see the module docstring)."""

    def __init__(self, store: CoordinationStore, *, site: str, component: str) -> None:
        self.inner = store
        self.site, self.component = site, component
        self._reachable = telemetry.STORE_REACHABLE.labels(site, component)

    @property
    def url(self) -> str:
        return self.inner.url

    def _call(self, op: str, fn: Callable[[], T], *, timed: bool = True) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = fn()
            outcome = "ok"
            return result
        except Conflict:
            outcome = "conflict"
            raise
        except StoreUnavailable:
            outcome = "unavailable"
            raise
        except OutcomeUnknown:
            outcome = "unknown"
            raise
        finally:
            if timed:
                telemetry.STORE_REQUEST_SECONDS.labels(
                    self.site, self.component, op, outcome
                ).observe(time.perf_counter() - started)
            if outcome in ("ok", "conflict"):
                self._reachable.set(1.0)
            elif outcome in ("unavailable", "unknown"):
                self._reachable.set(0.0)

    def get(self, key: str) -> Versioned | None:
        return self._call("get", lambda: self.inner.get(key))

    def list(self, prefix: str) -> builtins.list[Versioned]:
        return self._call("list", lambda: self.inner.list(prefix))

    def create(self, key: str, value: JsonDoc) -> str:
        return self._call("create", lambda: self.inner.create(key, value))

    def compare_and_set(self, key: str, value: JsonDoc, *, expected_revision: str) -> str:
        return self._call(
            "compare_and_set",
            lambda: self.inner.compare_and_set(key, value, expected_revision=expected_revision),
        )

    def delete(self, key: str, *, expected_revision: str) -> None:
        self._call("delete", lambda: self.inner.delete(key, expected_revision=expected_revision))

    def wait_for_change(
        self, prefix: str, known: Mapping[str, str], *, timeout_s: float
    ) -> builtins.list[Versioned]:
        return self._call(
            "wait_for_change",
            lambda: self.inner.wait_for_change(prefix, known, timeout_s=timeout_s),
            timed=False,
        )

    def close(self) -> None:
        self.inner.close()


if TYPE_CHECKING:

    def _conforms(store: CoordinationStore) -> CoordinationStore:
        return InstrumentedStore(store, site="a", component="agent")
