"""A CPU hog inside a reference component process: the resource fault of the demo and the
dashboards' live proof (docs/chaos.md, "CPU hog").

``SIGUSR1`` starts a thread that spins on the CPU (pure Python arithmetic: one core's
worth, and the process's own interpreter lock, as a runaway loop in a real component
would); ``SIGUSR2`` stops it. It stops by itself after ``max_duration_s`` (a fault that
someone forgot is bounded), and with the process. Only the reference components carry
it; a real component never would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("bfm.module")

MAX_DURATION_S = 300.0
"""The longest a hog spins before it stops by itself."""
_CHECK_EVERY = 20_000  # loop turns between looks at the clock and the stop flag


class CpuHog:
    """One spinning thread at a time; ``start`` while it spins changes nothing."""

    def __init__(
        self, monotonic: Callable[[], float], max_duration_s: float = MAX_DURATION_S
    ) -> None:
        self._monotonic = monotonic
        self.max_duration_s = max_duration_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.turns = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start spinning; False if it already was."""
        if self.running:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, name="cpu-hog", daemon=True)
        self._thread.start()
        log.warning(
            "cpu hog started (a test fault: SIGUSR2 stops it, else it stops after %.0f s)",
            self.max_duration_s,
        )
        return True

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop spinning; False if it was not."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return False
        self._stop.set()
        thread.join(timeout=timeout_s)
        return True

    def _spin(self) -> None:
        deadline = self._monotonic() + self.max_duration_s
        value = 0
        while not self._stop.is_set() and self._monotonic() < deadline:
            for turn in range(_CHECK_EVERY):
                value = (value * 31 + turn) % 1_000_003
            self.turns += _CHECK_EVERY
        log.warning("cpu hog stopped after %d loop turns", self.turns)
