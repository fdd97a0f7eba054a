"""Failure detection: probe results and lease ages -> up / suspect / down, with hysteresis.

Two views. On a site, the agent probes its component processes: a process that exited is
down at once (certain), failed probes make it suspect and then down, and it counts as up
again only after several good probes in a row. On the controller, a site is judged by the
age of its lease record (``quorum.LeaseObserver``). Hand-back waits until a returned site or
component has stayed up for a hold-off that doubles with every recent failure, so a
flapping site is not handed work back too early.
"""

from __future__ import annotations

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
    """Hysteresis for hand-back: up continuously for a hold-off that grows with flapping."""

    def __init__(self, timing: DetectorTiming) -> None:
        self.timing = timing
        self._up_since_s: float | None = None
        self._downs: deque[float] = deque()

    def update(self, *, up: bool, now_s: float) -> None:
        if up and self._up_since_s is None:
            self._up_since_s = now_s
        elif not up and self._up_since_s is not None:
            self._up_since_s = None
            self._downs.append(now_s)
        while self._downs and now_s - self._downs[0] > self.timing.flap_window_s:
            self._downs.popleft()

    def holdoff_s(self) -> float:
        """Base hold-off, doubled for each further failure within the flap window."""
        extra = max(0, len(self._downs) - 1)
        return min(self.timing.handback_holdoff_s * 2.0**extra, self.timing.max_holdoff_s)

    def stable(self, now_s: float) -> bool:
        """Up, and up long enough to be handed work back."""
        if self._up_since_s is None:
            return False
        if not self._downs:
            return True
        return now_s - self._up_since_s >= self.holdoff_s()

    @property
    def up(self) -> bool:
        return self._up_since_s is not None
