"""Ports: the Protocols the runtime uses to reach outside systems (store, clock).

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
from typing import Any, Protocol, runtime_checkable

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
