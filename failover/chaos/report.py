"""The one JSON report every scenario, demo, chaos run, simulation and benchmark prints.

Field names are fixed by ARCHITECTURE.md section 7 ("Reports"); tools that read reports
(CI, dashboards, the benchmark comparison) rely on them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which, when (seconds into the run), and a sentence saying how."""

    invariant: str
    at_s: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "at_s": round(self.at_s, 3), "detail": self.detail}


@dataclass(frozen=True)
class FaultEvent:
    """One entry of the fault timeline: a fault injected or healed."""

    at_s: float
    kind: str
    target: str
    action: str  # "inject" or "heal"

    def to_json(self) -> dict[str, Any]:
        return {
            "at_s": round(self.at_s, 3),
            "kind": self.kind,
            "target": self.target,
            "action": self.action,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return 0.0
    # q * n / 100 in exact arithmetic: 7 % of 100 values is rank 7, not 8.
    rank = max(1, math.ceil(Fraction(str(q)) * len(sorted_values) / 100))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """``{"p50", "p99", "max", "n"}`` of the values, in seconds rounded to milliseconds."""
    ordered = sorted(values)
    return {
        "p50": round(percentile(ordered, 50), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3) if ordered else 0.0,
        "n": len(ordered),
    }


@dataclass
class Report:
    """The common report. ``extra`` holds fields particular to one tool (runs, steps, ...)."""

    acked: int = 0
    acked_lost: int = 0
    duplicates_applied: int = 0
    stale_epoch_accepts: int = 0
    dual_owner_epochs: int = 0
    max_unavailability_s: float = 0.0
    unavailability_s: dict[str, list[float]] = field(default_factory=dict)
    shards_per_site: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[FaultEvent] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "acked": self.acked,
            "acked_lost": self.acked_lost,
            "duplicates_applied": self.duplicates_applied,
            "stale_epoch_accepts": self.stale_epoch_accepts,
            "dual_owner_epochs": self.dual_owner_epochs,
            "max_unavailability_s": round(self.max_unavailability_s, 3),
            "unavailability_s": {k: summarize(v) for k, v in sorted(self.unavailability_s.items())},
            "shards_per_site": self.shards_per_site,
            "faults": [f.to_json() for f in self.faults],
            "violations": [v.to_json() for v in self.violations],
        }
        clash = sorted(set(self.extra) & set(data))
        if clash:
            raise ValueError(f"report extra fields {clash} would overwrite the standard fields")
        data.update(self.extra)
        return data


def merge_unavailability(into: dict[str, list[float]], more: Mapping[str, Iterable[float]]) -> None:
    for kind, values in more.items():
        into.setdefault(kind, []).extend(values)
