"""A Clock for tests: time moves only when the test advances it (or code sleeps on it)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

START_MONOTONIC_S = 1000.0
START_WALL_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z, a fixed and readable epoch


class FakeClock:
    """Clock port with hand-driven time; ``sleep`` returns at once after advancing.

    Monotonic time starts at ``START_MONOTONIC_S`` (not 0, so code that treats 0 as
    "never" is caught) and wall time at ``start_wall_s``; both move together.
    """

    def __init__(
        self, *, start_monotonic_s: float = START_MONOTONIC_S, start_wall_s: float = START_WALL_S
    ) -> None:
        self._lock = threading.Lock()
        self._monotonic_s = start_monotonic_s
        self._wall_s = start_wall_s

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic_s

    def wall(self) -> float:
        with self._lock:
            return self._wall_s

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never back: the monotonic promise)."""
        if seconds < 0:
            raise ValueError(f"bfm: a fake clock cannot go back ({seconds} s)")
        with self._lock:
            self._monotonic_s += seconds
            self._wall_s += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))


if TYPE_CHECKING:
    from failover.ports import Clock

    _conforms: Clock = FakeClock()
