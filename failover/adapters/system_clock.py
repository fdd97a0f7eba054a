"""The real Clock: monotonic seconds for durations, wall seconds for records, real sleep."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING


class SystemClock:
    """Clock port backed by :mod:`time`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


if TYPE_CHECKING:
    from failover.ports import Clock

    _conforms: Clock = SystemClock()
