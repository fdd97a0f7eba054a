"""Rolling updates without downtime: the public API of the pure planner and state machine.

One worker site at a time is drained, changed, given a canary share of shards back,
judged by a health gate, then undrained and rebalanced; a failed gate rolls that site
back. The parts live in their own modules (docs/updates.md explains the design):

- ``update_manifest``: ``Release`` and ``parse_release`` (``ManifestError``)
- ``update_steps``: ``Step``, ``StepKind`` (with ``done_when``), ``Purpose``, ``Plan``
- ``update_plan``: ``plan_update``, ``component_order``, ``canary_shards`` (``PlanError``)
- ``update_state``: ``UpdateState`` and its document form (``StateError``, ``StaleStep``)
- ``update_machine``: ``start``, ``next_step``, ``step_started``, ``step_done``,
  ``step_failed``, ``abort``, ``unsettled_sites``, ``rollback_steps``
- ``update_gate``: ``gate_verdict``, ``GateBounds``, ``GateSamples``, ``GateVerdict``
"""

from __future__ import annotations

from failover.core.update_gate import GateBounds, GateSamples, GateVerdict, Verdict, gate_verdict
from failover.core.update_machine import (
    abort,
    next_step,
    rollback_steps,
    start,
    step_done,
    step_failed,
    step_started,
    unsettled_sites,
)
from failover.core.update_manifest import (
    ManifestError,
    Release,
    SiteStep,
    SiteStepKind,
    parse_release,
    site_item_key,
)
from failover.core.update_plan import (
    PlanError,
    Versions,
    canary_shards,
    component_order,
    plan_update,
)
from failover.core.update_state import (
    SCHEMA,
    Outcome,
    Phase,
    StaleStep,
    StateError,
    UpdateState,
)
from failover.core.update_steps import BACKBONE, Plan, Purpose, Step, StepKind

__all__ = [
    "BACKBONE",
    "SCHEMA",
    "GateBounds",
    "GateSamples",
    "GateVerdict",
    "ManifestError",
    "Outcome",
    "Phase",
    "Plan",
    "PlanError",
    "Purpose",
    "Release",
    "SiteStep",
    "SiteStepKind",
    "StaleStep",
    "StateError",
    "Step",
    "StepKind",
    "UpdateState",
    "Verdict",
    "Versions",
    "abort",
    "canary_shards",
    "component_order",
    "gate_verdict",
    "next_step",
    "parse_release",
    "plan_update",
    "rollback_steps",
    "site_item_key",
    "start",
    "step_done",
    "step_failed",
    "step_started",
    "unsettled_sites",
]
