"""Component versions and the health a component reports with them (pure).

A component instance runs one *version* (a release's name for it, such as ``1.4.0``). The
reference components take it as ``--version`` and answer the site's liveness ping with
it and their counters (``ComponentHealth``); the site reports both to the store, and the
rolling update's health gate judges the counters' growth over its soak.

A test version may carry build metadata ``+fail-after-ready`` (``1.5.0+fail-after-ready``):
the reference module then answers pings and passes readiness like any other, but refuses
every message it is given with an error. That is how the tests and the demo show a bad
release being rolled back under load; no real release carries it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_VERSION = "1.0.0"
FAIL_AFTER_READY = "fail-after-ready"
LATENCY_BOUNDS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of the latency buckets; one more bucket (+Inf) follows the last."""

_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")


def check_version(text: str) -> str:
    """The version, or ValueError naming the problem and the fix."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise ValueError(
            f"version {text!r} is not valid: use 1 to 64 letters, digits and . + _ - "
            "starting with a letter or digit (for example 1.4.0)"
        )
    return text


def fails_after_ready(version: str) -> bool:
    """Whether this is the test version that refuses every message once it is ready."""
    _, _, build = version.partition("+")
    return FAIL_AFTER_READY in build.split(".")


@dataclass(frozen=True)
class ComponentHealth:
    """What a component instance says of itself: its version and counters since it started.

    ``handled``: messages it finished (applied, or routed on by a router); ``errors``: the
    messages it refused because of its own fault (not ownership refusals, which are the
    protocol working); ``latency_counts``: handled messages per latency bucket
    (``LATENCY_BOUNDS_S``, then +Inf), not cumulative.
    """

    version: str
    handled: int = 0
    errors: int = 0
    latency_counts: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS_S) + 1)

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "handled": self.handled,
            "errors": self.errors,
            "latency_counts": list(self.latency_counts),
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> ComponentHealth:
        """ValueError naming the field when ``doc`` is not a health report."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"a health report must be an object, got {type(doc).__name__}")
        version = check_version(doc.get("version"))  # type: ignore[arg-type]
        counts = doc.get("latency_counts", [])
        if not isinstance(counts, list) or len(counts) != len(LATENCY_BOUNDS_S) + 1:
            raise ValueError(f"latency_counts must list {len(LATENCY_BOUNDS_S) + 1} buckets")
        handled, errors = doc.get("handled"), doc.get("errors")
        numbers = [handled, errors, *counts]
        if (
            not isinstance(handled, int)
            or not isinstance(errors, int)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers)
        ):
            raise ValueError("handled, errors and latency_counts must be given, integers >= 0")
        return ComponentHealth(version, handled, errors, tuple(counts))

    def minus(self, earlier: ComponentHealth) -> ComponentHealth:
        """The growth since ``earlier`` (of the same process: counters only grow; a
        restart in between, seen as a counter that went down, counts from zero)."""
        if self.handled < earlier.handled or self.errors < earlier.errors:
            return self
        counts = tuple(
            max(0, a - b) for a, b in zip(self.latency_counts, earlier.latency_counts, strict=True)
        )
        return ComponentHealth(
            self.version, self.handled - earlier.handled, self.errors - earlier.errors, counts
        )


def latency_bucket(latency_s: float) -> int:
    """The index of the bucket a latency falls into."""
    for i, bound in enumerate(LATENCY_BOUNDS_S):
        if latency_s <= bound:
            return i
    return len(LATENCY_BOUNDS_S)


def quantile_s(counts: Sequence[int], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (inf past the last bound; 0.0
    when nothing was counted)."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank and n:
            return LATENCY_BOUNDS_S[i] if i < len(LATENCY_BOUNDS_S) else float("inf")
    return float("inf")
