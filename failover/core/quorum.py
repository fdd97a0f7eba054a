"""Leases, self-fencing, the 2-of-3 majority and the control-plane failsafe, decided from inputs.

Timing (ARCHITECTURE.md section 7): a holder renews every ``renew_interval_s`` and fences
itself when it has not renewed for ``renew_deadline_s``, counted from the *start* of its
last successful renewal; anyone else considers the lease expired only after seeing no change
for ``lease_duration_s`` on its own monotonic clock, counted from its first read that showed
the current record (and never from before a read failure, since it saw nothing then). The
store applies a renewal after the holder starts it and others read it after that, so the
holder always stops at least ``lease_duration_s - renew_deadline_s`` before anyone may take
over: that margin is ``MIN_FENCE_MARGIN_S`` or more, checked when the timing is built.

Failsafe (Patroni's idea): a worker that cannot reach the store keeps its work past its
deadline only while every other worker has told it directly, within the last
``failsafe_confirm_s``, that it cannot reach the store either. Then nobody can write a
takeover, so ownership freezes instead of dropping. When a peer has the store back, its
reports stop; the worker renews in the meantime or fences when the last report is
``failsafe_confirm_s`` old, a full margin before anyone may take its work over.

This relies on the store being replicated across the sites (a member per site, clients
knowing every member): then a controller that can read the store shares a majority with
one of the workers, so it cannot read while both workers cannot. A worker whose own store
client fails while its site's member and links are fine is outside this assumption.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

MIN_FENCE_MARGIN_S = 0.5
"""The minority stops at least this long before the majority may take its work over."""


@dataclass(frozen=True)
class LeaseTiming:
    """Lease and heartbeat timing in seconds (keyword-only; defaults justified in the README)."""

    renew_interval_s: float = 0.25
    renew_deadline_s: float = 1.0
    lease_duration_s: float = 1.6
    heartbeat_interval_s: float = 0.2

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in (
            "renew_interval_s",
            "renew_deadline_s",
            "lease_duration_s",
            "heartbeat_interval_s",
        ):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                problems.append(f"{name} must be a finite number of seconds > 0, got {value}")
        if problems:
            raise ValueError("invalid lease timing: " + "; ".join(problems))
        if not 0 < self.renew_interval_s < self.renew_deadline_s:
            problems.append(
                f"need 0 < renew_interval_s ({self.renew_interval_s}) < renew_deadline_s "
                f"({self.renew_deadline_s})"
            )
        margin = self.lease_duration_s - self.renew_deadline_s
        if not margin >= MIN_FENCE_MARGIN_S:
            problems.append(
                f"lease_duration_s ({self.lease_duration_s}) must exceed renew_deadline_s "
                f"({self.renew_deadline_s}) by at least {MIN_FENCE_MARGIN_S} s"
            )
        if not 0 < self.heartbeat_interval_s < self.failsafe_confirm_s:
            problems.append(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be > 0 and shorter "
                f"than the failsafe confirmation window ({self.failsafe_confirm_s:.3f} s)"
            )
        if problems:
            raise ValueError("invalid lease timing: " + "; ".join(problems))

    @property
    def fence_margin_s(self) -> float:
        return self.lease_duration_s - self.renew_deadline_s

    @property
    def failsafe_confirm_s(self) -> float:
        """How fresh a peer's "store down too" report must be to keep work in failsafe.

        A peer learns the store is back within one renew interval and says so in its next
        heartbeat; a takeover needs a full lease duration from then, so the holder stops
        in time when ``renew_interval_s + failsafe_confirm_s <= renew_deadline_s``.
        """
        return self.renew_deadline_s - self.renew_interval_s


def has_majority(votes: int, total_sites: int) -> bool:
    """2 of 3: a decision needs more than half of all sites."""
    return votes > total_sites // 2


@dataclass(frozen=True)
class PeerReport:
    """The latest direct heartbeat from a peer: when it arrived, and whether it had the store."""

    received_at_s: float
    store_ok: bool


def holder_may_act(
    *,
    now_s: float,
    last_renew_start_s: float | None,
    timing: LeaseTiming,
    store_ok: bool,
    peers: Mapping[str, PeerReport | None],
) -> bool:
    """Whether a lease holder may still do its work now (else it must fence itself).

    ``peers`` holds the latest direct report of every *other* worker site (None: never
    heard). ``store_ok`` is whether the holder's latest store request succeeded.
    """
    if last_renew_start_s is None:
        return False
    if now_s - last_renew_start_s <= timing.renew_deadline_s:
        return True
    return in_failsafe(now_s=now_s, timing=timing, store_ok=store_ok, peers=peers)


def in_failsafe(
    *,
    now_s: float,
    timing: LeaseTiming,
    store_ok: bool,
    peers: Mapping[str, PeerReport | None],
) -> bool:
    """Store unreachable, and every other site (the witness too) confirms directly that it
    cannot reach it either: a site that can might be the controller taking work over."""
    if store_ok or not peers:
        return False
    for report in peers.values():
        if report is None or report.store_ok:
            return False
        if now_s - report.received_at_s > timing.failsafe_confirm_s:
            return False
    return True


class LeaseObserver:
    """Judges someone else's lease on the observer's own monotonic clock, as client-go does."""

    def __init__(self, *, lease_duration_s: float) -> None:
        self.lease_duration_s = lease_duration_s
        self._record: Hashable = _NEVER
        self._changed_at_s: float | None = None
        self._blind = True

    def observe(self, record: Hashable, now_s: float) -> None:
        """A successful read showed ``record`` (any hashable summary; None for no lease)."""
        if self._blind or record != self._record:
            self._record = record
            self._changed_at_s = now_s
        self._blind = False

    def read_failed(self) -> None:
        """The observer could not read: the next successful read restarts the count."""
        self._blind = True

    def age_s(self, now_s: float) -> float | None:
        """Seconds since the record last changed (None before the first read)."""
        if self._changed_at_s is None:
            return None
        return now_s - self._changed_at_s

    def expired(self, now_s: float) -> bool:
        """True once no change has been seen for ``lease_duration_s`` (never while blind).

        Ask it only right after a successful ``observe``: an old read says nothing of now.
        """
        age = self.age_s(now_s)
        return not self._blind and age is not None and age > self.lease_duration_s


_NEVER = object()
