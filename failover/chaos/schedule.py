"""Faults on a schedule: steps due some seconds after the traffic started, each recorded on
the report's fault timeline when it runs (the demo's and the chaos runs' common part)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from failover.chaos.report import FaultEvent


@dataclass
class Step:
    at_s: float
    kind: str
    target: str
    action: str  # inject | heal
    run: Callable[[], None]
    ready: Callable[[], bool] = lambda: True  # due only once this holds too
    waiting: Callable[[], str] = lambda: ""  # why it is not ready yet (for the report)

    def describe(self) -> dict[str, object]:
        """The step as the report lists one that never ran, with what it waited for."""
        return {
            "at_s": self.at_s,
            "kind": self.kind,
            "target": self.target,
            "action": self.action,
            "waiting_for": self.waiting(),
        }


def run_due(steps: list[Step], elapsed_s: float, timeline: list[FaultEvent]) -> None:
    """Run, in order, every step of ``steps`` (sorted by ``at_s``) that is due after
    ``elapsed_s`` seconds and ready; each one leaves ``steps`` and joins ``timeline``."""
    while steps and steps[0].at_s <= elapsed_s and steps[0].ready():
        step = steps.pop(0)
        step.run()
        timeline.append(FaultEvent(time.time(), step.kind, step.target, step.action))
