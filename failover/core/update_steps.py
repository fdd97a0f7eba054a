"""The steps of a rolling update: what each kind does and how to tell it is already done.

``Step`` is what the runtime executes and ``bfm update plan`` prints; ``Plan`` is a
release's ordered steps with a digest (``plan_id``). Both serialize to plain documents
(they live inside the update state in the coordination store).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

BACKBONE = "backbone"


class StepKind(StrEnum):
    """What a step does; ``done_when`` is how the runtime tells it is already done.

    The runtime marks a step running before it acts and checks ``done_when`` first when it
    finds the current step running after a restart, so every kind is safe to run again.
    """

    PRECHECK = "precheck"
    DRAIN = "drain"
    UPDATE_OS = "update_os"
    UPDATE_CLUSTER = "update_cluster"
    UPDATE_COMPONENT = "update_component"
    CANARY = "canary"
    GATE = "gate"
    UNDRAIN = "undrain"
    REBALANCE = "rebalance"

    @property
    def done_when(self) -> str:
        return _DONE_WHEN[self]


_DONE_WHEN: Mapping[StepKind, str] = {
    StepKind.PRECHECK: (
        "read-only, so always re-run: every site alive, no orphaned, draining or moving shard "
        "(no failover or hand-back running), no site drained, nothing pinned, even placement"
    ),
    StepKind.DRAIN: (
        "the site is in admin/policy's drained sites and owns no shard of any component "
        "(every transfer finished); 'bfm drain' of a drained site changes nothing"
    ),
    StepKind.UPDATE_OS: (
        "the site reports the os item at to_version and is up again: fresh lease, every "
        "component ready"
    ),
    StepKind.UPDATE_CLUSTER: (
        "the site reports the cluster item at to_version and is up again: fresh lease, "
        "every component ready"
    ),
    StepKind.UPDATE_COMPONENT: (
        "the site reports the component running at to_version and ready; then nothing is restarted"
    ),
    StepKind.CANARY: (
        "the site may hold `shards` shards per component (and no more), holds them, and "
        "its components are ready"
    ),
    StepKind.GATE: (
        "never: after a restart the soak starts over from zero (a longer soak is safe, a "
        "shorter one is not)"
    ),
    StepKind.UNDRAIN: (
        "the site is neither in admin/policy's drained sites nor limited to a canary share"
    ),
    StepKind.REBALANCE: (
        "nothing pinned, no site drained, no shard draining, and every component's "
        "placement is even over the worker sites"
    ),
}


class Purpose(StrEnum):
    """Why a step is in the list: the release itself, a site's rollback, or an abort."""

    UPDATE = "update"
    ROLLBACK = "rollback"
    ABORT = "abort"


@dataclass(frozen=True)
class Step:
    """One action for the runtime; ``explanation`` is what ``bfm update plan`` prints.

    ``target`` is the component (UPDATE_COMPONENT) or the site item key such as
    ``os:debian`` (UPDATE_OS, UPDATE_CLUSTER), else empty. Versions are None where none
    applies or the current one is unknown. ``shards`` is the canary's shards per
    component; ``soak_s`` the gate's soak.
    """

    kind: StepKind
    site: str
    target: str = ""
    from_version: str | None = None
    to_version: str | None = None
    shards: int = 0
    soak_s: float = 0.0
    purpose: Purpose = Purpose.UPDATE
    explanation: str = ""

    @property
    def summary(self) -> str:
        """One line: ``a: update eep 1.0 -> 1.1``."""
        what = self.kind.value.replace("_", " ")
        if self.target:
            verb = "restore" if self.purpose is Purpose.ROLLBACK else "update"
            shown = self.target.replace(":", " ")  # os:debian -> os debian
            what = f"{verb} {shown} {self.from_version or '?'} -> {self.to_version}"
        if self.kind is StepKind.CANARY:
            what += f" ({self.shards} shard(s) per component)"
        if self.kind is StepKind.GATE:
            what += f" (soak {self.soak_s:g} s)"
        tag = "" if self.purpose is Purpose.UPDATE else f" [{self.purpose.value}]"
        return f"{self.site}: {what}{tag}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "site": self.site,
            "target": self.target,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "shards": self.shards,
            "soak_s": self.soak_s,
            "purpose": self.purpose.value,
            "explanation": self.explanation,
        }

    @staticmethod
    def from_doc(doc: Any, where: str = "step") -> Step:
        """Parse ``to_doc``'s output; ValueError naming the field otherwise."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"field {where!r} must be an object, got {type(doc).__name__}")
        unknown = set(doc) - set(Step.__dataclass_fields__)
        if unknown:
            raise ValueError(f"field {where!r} has unknown fields {sorted(map(str, unknown))}")
        try:
            kind, purpose = StepKind(str(doc.get("kind"))), Purpose(str(doc.get("purpose")))
        except ValueError:
            raise ValueError(
                f"field {where!r}: kind {doc.get('kind')!r} or purpose "
                f"{doc.get('purpose')!r} is not known"
            ) from None
        texts = {k: doc.get(k) for k in ("site", "target", "explanation")}
        for key, value in texts.items():
            if not isinstance(value, str) or (key == "site" and not value):
                raise ValueError(f"field '{where}.{key}' must be a string, got {value!r}")
        versions = {k: doc.get(k) for k in ("from_version", "to_version")}
        for key, value in versions.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"field '{where}.{key}' must be a version or null, got {value!r}")
        shards, soak_s = doc.get("shards"), doc.get("soak_s")
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 0:
            raise ValueError(f"field '{where}.shards' must be an integer >= 0, got {shards!r}")
        if isinstance(soak_s, bool) or not isinstance(soak_s, int | float):
            raise ValueError(f"field '{where}.soak_s' must be a number, got {soak_s!r}")
        if not (math.isfinite(soak_s) and soak_s >= 0):
            raise ValueError(f"field '{where}.soak_s' must be a number >= 0, got {soak_s!r}")
        return Step(
            kind,
            str(texts["site"]),
            str(texts["target"]),
            versions["from_version"],
            versions["to_version"],
            shards,
            float(soak_s),
            purpose,
            str(texts["explanation"]),
        )


@dataclass(frozen=True)
class Plan:
    """The ordered steps of one release; ``plan_id`` is a digest of the release and steps."""

    release: str
    steps: tuple[Step, ...]

    @property
    def plan_id(self) -> str:
        text = json.dumps(
            {"release": self.release, "steps": [s.to_doc() for s in self.steps]},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def sites(self) -> tuple[str, ...]:
        """The sites the plan touches, in the order it touches them."""
        return tuple(dict.fromkeys(s.site for s in self.steps))

    def to_doc(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "plan_id": self.plan_id,
            "steps": [s.to_doc() for s in self.steps],
        }

    @staticmethod
    def from_doc(doc: Any) -> Plan:
        """Parse ``to_doc``'s output; a plan whose digest does not match is refused."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"field 'plan' must be an object, got {type(doc).__name__}")
        release, steps = doc.get("release"), doc.get("steps")
        if not isinstance(release, str) or not release:
            raise ValueError(f"field 'plan.release' must be a release name, got {release!r}")
        if not isinstance(steps, list):
            raise ValueError(f"field 'plan.steps' must be a list, got {type(steps).__name__}")
        plan = Plan(
            release, tuple(Step.from_doc(s, f"plan.steps[{i}]") for i, s in enumerate(steps))
        )
        if doc.get("plan_id") != plan.plan_id:
            raise ValueError(
                f"field 'plan.plan_id' is {doc.get('plan_id')!r} but the steps digest to "
                f"{plan.plan_id!r}: the stored plan was changed or damaged"
            )
        return plan


def recovery_steps(site: str, others: str, purpose: Purpose) -> tuple[Step, Step]:
    """Undrain ``site`` fully, then wait until the placement is even again."""
    return (
        Step(
            StepKind.UNDRAIN,
            site,
            purpose=purpose,
            explanation=f"undrain {site}: it may hold its full share again",
        ),
        Step(
            StepKind.REBALANCE,
            site,
            purpose=purpose,
            explanation=(
                f"rebalance: shards move back from {others} in bounded batches until every "
                "component is split evenly; nothing pinned"
            ),
        ),
    )


def update_component_step(
    site: str, component: str, from_version: str | None, to_version: str, *, rollback: bool = False
) -> Step:
    """Run ``component`` at ``site`` at ``to_version`` (the site is drained meanwhile)."""
    if rollback:
        why = "the version before the update"
    elif component == BACKBONE:
        why = "the backbone last: the router writes what its modules already read"
    else:
        why = "modules before the backbone: readers before the writer"
    return Step(
        StepKind.UPDATE_COMPONENT,
        site,
        target=component,
        from_version=from_version,
        to_version=to_version,
        purpose=Purpose.ROLLBACK if rollback else Purpose.UPDATE,
        explanation=f"{component} at {site}: {from_version or '?'} -> {to_version} ({why})",
    )


def drain_step(site: str, others: str, purpose: Purpose) -> Step:
    """Drain ``site`` again (a rollback after its canary took shards back)."""
    return Step(
        StepKind.DRAIN,
        site,
        purpose=purpose,
        explanation=f"drain {site} again: its shards move to {others} before it is restored",
    )
