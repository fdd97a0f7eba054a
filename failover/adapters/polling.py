"""``wait_for_change`` for stores without a native watch: poll the listing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from failover.ports import Versioned


def poll_for_change(
    listing: Callable[[str], list[Versioned]],
    prefix: str,
    known: Mapping[str, str],
    *,
    timeout_s: float,
    poll_interval_s: float,
    closed: threading.Event,
) -> list[Versioned]:
    """The listing under ``prefix`` as soon as it differs from ``known`` (key -> revision),
    or after ``timeout_s``; a set ``closed`` event ends the wait early."""
    # Entries of ``known`` outside ``prefix`` are ignored rather than counted as deleted.
    expected = {k: r for k, r in known.items() if k.startswith(prefix)}
    deadline_s = time.monotonic() + max(timeout_s, 0.0)
    while True:
        current = listing(prefix)
        remaining_s = deadline_s - time.monotonic()
        if {v.key: v.revision for v in current} != expected or remaining_s <= 0:
            return current
        closed.wait(min(poll_interval_s, remaining_s))
