"""The store's keys and documents as the runtime reads and writes them.

Keys (one JSON document each, ARCHITECTURE.md section 7):

- ``controller/leader``: the controllers' leader lease ``{holder, term, renew_count}``;
- ``sites/<site>/lease``: a worker site's lease (``failover.core.agent.LeaseRecord``);
- ``ownership/<component>``: a component's ownership (``failover.core.fencing.Ownership``);
- ``admin/policy``: the operator's desired state (``AdminPolicy``: drained sites, pins,
  canary limits);
- ``events/<sequence>``: the decision history, one ``Event`` per committed decision or
  operator change, the sequence zero-padded so that keys sort in order.

Parsing is cached by (key, revision), so a document is parsed once however often it is read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import bfm_observe
from failover import telemetry
from failover.core.agent import LeaseRecord
from failover.core.fencing import Ownership
from failover.ports import Versioned

LEADER_KEY = "controller/leader"
OWNERSHIP_PREFIX = "ownership/"
ADMIN_POLICY_KEY = "admin/policy"
EVENTS_PREFIX = "events/"
EVENT_SEQUENCE_DIGITS = 12

log = logging.getLogger("bfm.store")
T = TypeVar("T")


def lease_key(site: str) -> str:
    return f"sites/{site}/lease"


def ownership_key(component: str) -> str:
    return f"{OWNERSHIP_PREFIX}{component}"


def event_key(sequence: int) -> str:
    return f"{EVENTS_PREFIX}{sequence:0{EVENT_SEQUENCE_DIGITS}d}"


def event_sequence(key: str) -> int | None:
    """The sequence number of an ``events/`` key, or None for a key not written by us."""
    digits = key.removeprefix(EVENTS_PREFIX)
    return int(digits) if key.startswith(EVENTS_PREFIX) and digits.isdigit() else None


@dataclass(frozen=True)
class LeaderRecord:
    """The controllers' leader lease: who, which term, how often renewed."""

    holder: str
    term: int
    renew_count: int

    def to_doc(self) -> dict[str, Any]:
        return {"holder": self.holder, "term": self.term, "renew_count": self.renew_count}

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> LeaderRecord:
        if not isinstance(doc, Mapping):
            raise ValueError(f"leader document must be an object, got {type(doc).__name__}")
        holder, term, count = doc.get("holder"), doc.get("term"), doc.get("renew_count")
        if not isinstance(holder, str) or not holder:
            raise ValueError(f"leader document: 'holder' must be a site name, got {holder!r}")
        for name, value in (("term", term), ("renew_count", count)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"leader document: {name!r} must be an integer >= 0, got {value!r}"
                )
        assert isinstance(term, int) and isinstance(count, int)
        return LeaderRecord(holder, term, count)


@dataclass(frozen=True)
class AdminPolicy:
    """The operator's desired state: sites drained of all work, components pinned to a site,
    sites limited to a canary of at most N shards per component.

    The controller applies it on top of its configured ``PlacementPolicy``: a drained site
    gets no work (its shards move away batch by batch through drains), a pinned
    component's shards all move to its site, and a canary site (a partial undrain) holds
    at most its N shards of each component (``PlacementPolicy.caps``). No pins, no drained
    and no canary site is the default; a site is never both drained and a canary.
    """

    drained_sites: tuple[str, ...] = ()
    pinned: Mapping[str, str] = field(default_factory=dict)
    canary: Mapping[str, int] = field(default_factory=dict)
    changed_by: str = ""
    changed_at_wall_s: float = 0.0
    reason: str = ""

    def to_doc(self) -> dict[str, Any]:
        return {
            "drained_sites": sorted(self.drained_sites),
            "pinned": dict(sorted(self.pinned.items())),
            "canary": dict(sorted(self.canary.items())),
            "changed_by": self.changed_by,
            "changed_at_wall_s": self.changed_at_wall_s,
            "reason": self.reason,
        }

    def same_choices(self, other: AdminPolicy) -> bool:
        """The same drained sites, pins and canaries (who changed it, when and why aside)."""
        return (
            set(self.drained_sites) == set(other.drained_sites)
            and dict(self.pinned) == dict(other.pinned)
            and dict(self.canary) == dict(other.canary)
        )

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> AdminPolicy:
        """Parse ``admin/policy``; anything malformed raises ValueError naming the field."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"admin/policy must be an object, got {type(doc).__name__}")
        drained = doc.get("drained_sites", [])
        if not isinstance(drained, list) or not all(isinstance(s, str) and s for s in drained):
            raise ValueError(f"field 'drained_sites' must be a list of site names, got {drained!r}")
        pinned = doc.get("pinned", {})
        if not isinstance(pinned, Mapping) or not all(
            isinstance(c, str) and isinstance(s, str) and s for c, s in pinned.items()
        ):
            raise ValueError(
                f"field 'pinned' must be an object of component -> site, got {pinned!r}"
            )
        canary = _canary_from_doc(doc.get("canary", {}), drained)
        changed_by, reason = doc.get("changed_by", ""), doc.get("reason", "")
        for name, value in (("changed_by", changed_by), ("reason", reason)):
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} must be a string, got {value!r}")
        at = doc.get("changed_at_wall_s", 0.0)
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise ValueError(f"field 'changed_at_wall_s' must be a number, got {at!r}")
        return AdminPolicy(
            drained_sites=tuple(sorted(set(drained))),
            pinned=dict(sorted(pinned.items())),
            canary=canary,
            changed_by=changed_by,
            changed_at_wall_s=float(at),
            reason=reason,
        )


def _canary_from_doc(canary: Any, drained: list[str]) -> dict[str, int]:
    """``canary``: site -> shards per component (an integer >= 1), no site also drained."""
    if not isinstance(canary, Mapping) or not all(isinstance(s, str) and s for s in canary):
        raise ValueError(
            f"field 'canary' must be an object of site -> shards per component, got {canary!r}"
        )
    for site, shards in canary.items():
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ValueError(
                f"field 'canary': site {site}'s shards per component must be an integer "
                f">= 1, got {shards!r}"
            )
    both = sorted(set(canary) & set(drained))
    if both:
        raise ValueError(
            f"site(s) {', '.join(both)} both drained and limited to a canary; a site is "
            "one or the other ('bfm undrain SITE' clears both)"
        )
    return dict(sorted(canary.items()))


@dataclass(frozen=True)
class Event:
    """One entry of the decision history (``events/<sequence>``).

    ``kind`` is a decision kind (initial, failover, drain, transfer, cancel_drain) written
    by the leading controller, or ``admin`` for an operator's change of ``admin/policy``
    (then ``leader`` names who changed it and ``component`` is empty).
    """

    at_wall_s: float
    kind: str
    reason: str
    leader: str = ""
    term: int = 0
    component: str = ""
    shards: tuple[int, ...] = ()
    moves: tuple[tuple[int, str | None, str | None], ...] = ()  # (shard, from, to)
    epoch_before: int = 0
    epoch_after: int = 0
    trace_id: str = ""

    def to_doc(self) -> dict[str, Any]:
        return {
            "at_wall_s": self.at_wall_s,
            "kind": self.kind,
            "reason": self.reason,
            "leader": self.leader,
            "term": self.term,
            "component": self.component,
            "shards": list(self.shards),
            "moves": [list(m) for m in self.moves],
            "epoch_before": self.epoch_before,
            "epoch_after": self.epoch_after,
            "trace_id": self.trace_id,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Event:
        """Parse an event document; anything malformed raises ValueError naming the field."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"an event must be an object, got {type(doc).__name__}")
        at = doc.get("at_wall_s")
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise ValueError(f"field 'at_wall_s' must be a number, got {at!r}")
        texts = {k: doc.get(k, "") for k in ("kind", "reason", "leader", "component", "trace_id")}
        for name, value in texts.items():
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} must be a string, got {value!r}")
        numbers = {k: doc.get(k, 0) for k in ("term", "epoch_before", "epoch_after")}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"field {name!r} must be an integer >= 0, got {value!r}")
        shards = doc.get("shards", [])
        if not isinstance(shards, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in shards
        ):
            raise ValueError(f"field 'shards' must be a list of shard indexes, got {shards!r}")
        moves = doc.get("moves", [])
        if not isinstance(moves, list) or not all(_is_move(m) for m in moves):
            raise ValueError(f"field 'moves' must be [shard, from, to] items, got {moves!r}")
        return Event(
            at_wall_s=float(at),
            kind=texts["kind"],
            reason=texts["reason"],
            leader=texts["leader"],
            term=numbers["term"],
            component=texts["component"],
            shards=tuple(shards),
            moves=tuple((m[0], m[1], m[2]) for m in moves),
            epoch_before=numbers["epoch_before"],
            epoch_after=numbers["epoch_after"],
            trace_id=texts["trace_id"],
        )


def _is_move(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], int)
        and all(x is None or isinstance(x, str) for x in item[1:])
    )


class Parsed(Generic[T]):
    """Parses documents of one kind, once per (key, revision). A document it refuses
    (ValueError: damaged, or written by something else) raises the same ValueError on
    every read of that revision, and is counted (``bfm_refused_documents_total{kind}``)
    and logged once, naming the key, the revision and the problem."""

    def __init__(self, parse: Callable[[Mapping[str, Any]], T]) -> None:
        self._parse = parse
        self._latest: dict[str, tuple[str, T]] = {}
        self._refused: dict[str, tuple[str, ValueError]] = {}

    def __call__(self, item: Versioned) -> T:
        cached = self._latest.get(item.key)
        if cached is not None and cached[0] == item.revision:
            return cached[1]
        refused = self._refused.get(item.key)
        if refused is not None and refused[0] == item.revision:
            raise refused[1]
        try:
            value = self._parse(item.value)
        except ValueError as err:
            self._refused[item.key] = (item.revision, err)
            _refused(item, err)
            raise
        self._refused.pop(item.key, None)
        self._latest[item.key] = (item.revision, value)
        return value


def _refused(item: Versioned, err: ValueError) -> None:
    observed = bfm_observe.current()
    site, component = (observed.site, observed.component) if observed else ("", "")
    kind = document_kind(item.key)
    telemetry.REFUSED_DOCUMENTS.labels(site, component, kind).inc()
    log.warning(
        "store document %s (revision %s) refused: %s",
        item.key,
        item.revision,
        err,
        extra={"event": "refused_document", "key": item.key, "kind": kind},
    )


def document_kind(key: str) -> str:
    """The kind of a store key for metrics: its path without the per-site or
    per-component part (``sites/a/lease`` -> ``sites/lease``, ``ownership/eap`` ->
    ``ownership``, ``events/000042`` -> ``events``)."""
    parts = key.split("/")
    if parts[0] == "sites" and len(parts) == 3:
        return f"sites/{parts[2]}"
    return parts[0] if len(parts) > 1 and parts[0] in _PER_NAME else key


_PER_NAME = {"ownership", "events"}


def ownership_parser() -> Parsed[Ownership]:
    return Parsed(Ownership.from_doc)


def lease_parser() -> Parsed[LeaseRecord]:
    return Parsed(LeaseRecord.from_doc)


def admin_parser() -> Parsed[AdminPolicy]:
    return Parsed(AdminPolicy.from_doc)
