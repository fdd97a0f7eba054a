"""When to restart a crashed component instance, and when to stop trying (crash-looping).

Each crash within ``crash_window_s`` doubles the wait before the restart: the first crash
waits ``first_backoff_s``, the next twice that, and so on up to ``max_backoff_s``. Crashes
older than the window are forgotten, so an instance that crashes once a day always restarts
after the first backoff. The ``give_up_after_crashes``-th crash within the window gives up:
the instance stays down (its shards stay at the other site, where the active-active twin
already serves them) and the supervisor alerts. Times are monotonic seconds passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartTiming:
    """Backoff and crash-loop limits (seconds, counts)."""

    first_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    crash_window_s: float = 60.0
    give_up_after_crashes: int = 5

    def __post_init__(self) -> None:
        for name in ("first_backoff_s", "max_backoff_s", "crash_window_s"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
        if self.max_backoff_s < self.first_backoff_s:
            raise ValueError(
                f"max_backoff_s ({self.max_backoff_s}) must be at least first_backoff_s "
                f"({self.first_backoff_s})"
            )
        if isinstance(self.give_up_after_crashes, bool) or self.give_up_after_crashes < 1:
            raise ValueError(
                f"give_up_after_crashes must be an integer >= 1, got {self.give_up_after_crashes}"
            )

    def backoff_s(self, crashes: int) -> float:
        """The wait before the restart after the ``crashes``-th crash within the window."""
        if crashes < 1:
            raise ValueError(f"crashes must be >= 1, got {crashes}")
        # Exponent capped so a long crash history never overflows a float.
        return min(self.first_backoff_s * 2.0 ** min(crashes - 1, 64), self.max_backoff_s)


@dataclass(frozen=True)
class RestartDecision:
    """What to do about one crash: restart at ``restart_at_s``, or give up."""

    crashes: int  # within the window, this one included
    give_up: bool
    backoff_s: float  # 0 when giving up
    restart_at_s: float | None  # None when giving up


class CrashHistory:
    """One instance's recent crashes and the decisions they lead to."""

    def __init__(self, timing: RestartTiming) -> None:
        self.timing = timing
        self._crashes: deque[float] = deque()
        self._given_up = False
        self._last_s: float | None = None

    @property
    def given_up(self) -> bool:
        return self._given_up

    def crashed(self, now_s: float) -> RestartDecision:
        """Record a crash seen at ``now_s`` and decide: restart after a backoff, or give up."""
        if self._last_s is not None and now_s < self._last_s:
            raise ValueError(f"crash times must not go back: {now_s} after {self._last_s}")
        self._last_s = now_s
        self._forget(now_s)
        self._crashes.append(now_s)
        crashes = len(self._crashes)
        if self._given_up or crashes >= self.timing.give_up_after_crashes:
            self._given_up = True
            return RestartDecision(crashes, give_up=True, backoff_s=0.0, restart_at_s=None)
        backoff_s = self.timing.backoff_s(crashes)
        return RestartDecision(
            crashes, give_up=False, backoff_s=backoff_s, restart_at_s=now_s + backoff_s
        )

    def crashes(self, now_s: float) -> int:
        """Crashes within the window that ends at ``now_s``."""
        return sum(1 for t in self._crashes if now_s - t <= self.timing.crash_window_s)

    def reset(self) -> None:
        """Forget everything (an operator started a given-up instance again)."""
        self._crashes.clear()
        self._given_up = False

    def _forget(self, now_s: float) -> None:
        while self._crashes and now_s - self._crashes[0] > self.timing.crash_window_s:
            self._crashes.popleft()
