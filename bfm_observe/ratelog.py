"""Log lines about hostile or faulty input that a flood cannot turn into a flood of lines:
the first of each kind at once, then at most one line per ``every_s`` saying how many
there were and the last one's detail (SECURITY.md, "Hostile input"). Counters count them
all; this only keeps the logs readable."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any


class Summarized:
    """``note(key, what, detail)`` logs at WARNING: ``<n> <what> in the last <s> s; the
    last: <detail>``, once per ``every_s`` for each ``key``."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.every_s, self._monotonic = logger, every_s, monotonic
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, float]] = {}  # key -> (unlogged count, last line at)

    def note(self, key: str, what: str, detail: str, **extra: Any) -> bool:
        """Count one; True when it was logged now."""
        now_s = self._monotonic()
        with self._lock:
            count, logged_s = self._seen.get(key, (0, now_s - self.every_s))
            count += 1
            if now_s - logged_s < self.every_s:
                self._seen[key] = (count, logged_s)
                return False
            self._seen[key] = (0, now_s)
        self.logger.warning(
            "%d %s in the last %.0f s; the last: %s",
            count,
            what,
            self.every_s,
            detail.strip() or "(no detail)",
            extra=extra,
        )
        return True
