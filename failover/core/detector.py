"""Failure detection: probe results and lease ages -> up / suspect / down, with hysteresis.

Two views. On a site, the agent probes its component processes: a process that exited is
down at once (certain), failed probes make it suspect and then down, and it counts as up
again only after several good probes in a row. On the controller, a site is judged by the
age of its lease record (``quorum.LeaseObserver``). Hand-back waits until a returned site or
component has stayed up for a hold-off that doubles with every recent failure, so a
flapping site is not handed work back too early.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


@dataclass(frozen=True)
class DetectorTiming:
    """Probe thresholds and hand-back hold-off (seconds, counts)."""

    probe_interval_s: float = 0.1
    suspect_after_failures: int = 1
    down_after_failures: int = 3
    up_after_successes: int = 3
    handback_holdoff_s: float = 10.0
    max_holdoff_s: float = 80.0
    flap_window_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("probe_interval_s", "flap_window_s"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
        if not self.flap_window_s >= self.max_holdoff_s:
            raise ValueError(
                f"flap_window_s ({self.flap_window_s}) must be at least max_holdoff_s "
                f"({self.max_holdoff_s}), or a failure would be forgotten before its hold-off"
            )
        if not 1 <= self.suspect_after_failures <= self.down_after_failures:
            raise ValueError("need 1 <= suspect_after_failures <= down_after_failures")
        if self.up_after_successes < 1:
            raise ValueError("up_after_successes must be >= 1")
        if not 0 <= self.handback_holdoff_s <= self.max_holdoff_s:
            raise ValueError("need 0 <= handback_holdoff_s <= max_holdoff_s")


class ComponentDetector:
    """One component instance's health from its probes, as the site agent sees it."""

    def __init__(self, timing: DetectorTiming, *, initial: Health = Health.DOWN) -> None:
        self.timing = timing
        self.health = initial
        self._failures = 0
        self._successes = 0

    def probe(self, *, ok: bool, exited: bool = False) -> Health:
        """Feed one probe result; ``exited`` means the process is gone (down at once)."""
        if exited:
            self._failures, self._successes = self.timing.down_after_failures, 0
            self.health = Health.DOWN
        elif ok:
            self._failures = 0
            self._successes += 1
            if self.health is not Health.DOWN or self._successes >= self.timing.up_after_successes:
                self.health = Health.UP
        else:
            self._successes = 0
            self._failures += 1
            if self._failures >= self.timing.down_after_failures:
                self.health = Health.DOWN
            elif self._failures >= self.timing.suspect_after_failures:
                self.health = Health.SUSPECT if self.health is not Health.DOWN else Health.DOWN
        return self.health


def site_health(age_s: float | None, *, renew_interval_s: float, lease_duration_s: float) -> Health:
    """A site from its lease age: up while renewals arrive, suspect when late, down expired."""
    if age_s is None or age_s > lease_duration_s:
        return Health.DOWN
    if age_s > 2 * renew_interval_s:
        return Health.SUSPECT
    return Health.UP


class Stability:
    """Hysteresis for hand-back: up continuously for a hold-off that grows with flapping.

    A site or component never seen down is stable as soon as it is up. After a failure
    (including one seen first, before any up) it must stay up for the hold-off: the base,
    doubled for each further failure within ``flap_window_s`` before it came back up,
    capped at ``max_holdoff_s``.
    """

    def __init__(self, timing: DetectorTiming) -> None:
        self.timing = timing
        self._up_since_s: float | None = None
        self._seen = False
        self._downs: deque[float] = deque()
        self._holdoff_s = 0.0

    def update(self, *, up: bool, now_s: float) -> None:
        if up and self._up_since_s is None:
            self._up_since_s = now_s
            self._forget(now_s)
            # The failure it recovers from always counts, however long the outage was.
            failures = max(len(self._downs), 1 if self._seen else 0)
            self._holdoff_s = self._holdoff_for(failures)
        elif not up and (self._up_since_s is not None or not self._seen):
            self._up_since_s = None
            self._forget(now_s)
            self._downs.append(now_s)
        self._seen = True

    def _forget(self, now_s: float) -> None:
        """Drop failures older than the flap window."""
        while self._downs and now_s - self._downs[0] > self.timing.flap_window_s:
            self._downs.popleft()

    def _holdoff_for(self, downs: int) -> float:
        if downs == 0:
            return 0.0
        doubled = self.timing.handback_holdoff_s * 2.0 ** (downs - 1)
        return min(doubled, self.timing.max_holdoff_s)

    def holdoff_s(self) -> float:
        """The hold-off that applies to the current (or, while down, the next) up period."""
        if self._up_since_s is not None:
            return self._holdoff_s
        return self._holdoff_for(max(len(self._downs), 1 if self._seen else 0))

    def stable(self, now_s: float) -> bool:
        """Up, and up long enough to be handed work back."""
        if self._up_since_s is None:
            return False
        return now_s - self._up_since_s >= self._holdoff_s

    @property
    def up(self) -> bool:
        return self._up_since_s is not None
