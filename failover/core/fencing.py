"""Epochs as fencing tokens: every ownership change of a shard gets a larger epoch.

A component's ownership is one document (owners, owner sessions and epochs of all its
shards), because the store writes single keys only. The sink side (``EpochFence``) refuses
work stamped with an epoch lower than the highest it has seen for that shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Assignment:
    """Who owns one shard: the site, the lease session it was granted to, and the epoch.

    ``draining`` marks a planned move: the owner stops taking new work for the shard and
    acknowledges ``drain_id``, then the controller transfers it under a new epoch. Every
    drain gets a new id, so an acknowledgement of a cancelled drain never counts for a
    later one.
    """

    owner: str | None
    epoch: int
    session: int = 0
    draining: bool = False
    drain_id: int = 0


@dataclass(frozen=True)
class Ownership:
    """The ownership document of one component."""

    component: str
    shards: tuple[Assignment, ...]
    max_epoch: int
    trace_id: str = ""  # the deciding trace (32 hex; "" before any decision)
    span_id: str = ""  # the deciding span in it (16 hex), so later work can link to it

    def owner(self, index: int) -> str | None:
        return self.shards[index].owner

    def counts(self, sites: Iterable[str]) -> dict[str, int]:
        """Shards owned per site (sites given first, so a site owning none shows 0)."""
        counts = dict.fromkeys(sites, 0)
        for a in self.shards:
            if a.owner is not None:
                counts[a.owner] = counts.get(a.owner, 0) + 1
        return counts

    def owned_by(self, site: str) -> list[int]:
        return [i for i, a in enumerate(self.shards) if a.owner == site]

    def to_doc(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "max_epoch": self.max_epoch,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "shards": [
                {
                    "owner": a.owner,
                    "epoch": a.epoch,
                    "session": a.session,
                    "draining": a.draining,
                    "drain_id": a.drain_id,
                }
                for a in self.shards
            ],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Ownership:
        """Parse an ownership document; a malformed one raises ValueError naming the field."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"an ownership document must be an object, got {type(doc).__name__}")
        try:
            component = doc["component"]
            if not isinstance(component, str) or not component:
                raise ValueError(f"field 'component' must be a non-empty string, got {component!r}")
            max_epoch = _int(doc["max_epoch"], "max_epoch")
            raw = doc["shards"]
            if not isinstance(raw, list):
                raise ValueError("'shards' must be a list")
            shards = tuple(_assignment(item, i) for i, item in enumerate(raw))
        except KeyError as missing:
            raise ValueError(f"ownership document lacks field {missing}") from None
        if any(max(a.epoch, a.drain_id) > max_epoch for a in shards):
            raise ValueError(f"ownership of {component}: a shard epoch exceeds max_epoch")
        trace_id, span_id = doc.get("trace_id", ""), doc.get("span_id", "")
        if not isinstance(trace_id, str):
            raise ValueError(f"field 'trace_id' must be a string, got {trace_id!r}")
        if not isinstance(span_id, str):
            raise ValueError(f"field 'span_id' must be a string, got {span_id!r}")
        return Ownership(component, shards, max_epoch, trace_id, span_id)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"field {name!r} must be a non-negative integer, got {value!r}")
    return value


def _assignment(item: Any, index: int) -> Assignment:
    if not isinstance(item, Mapping):
        raise ValueError(f"shard {index} must be an object, got {item!r}")
    owner = item.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise ValueError(f"shard {index} owner must be a site name or null, got {owner!r}")
    draining = item.get("draining", False)
    if not isinstance(draining, bool):
        raise ValueError(
            f"field 'shards[{index}].draining' must be true or false, got {draining!r}"
        )
    return Assignment(
        owner=owner,
        epoch=_int(item.get("epoch"), f"shards[{index}].epoch"),
        session=_int(item.get("session", 0), f"shards[{index}].session"),
        draining=draining,
        drain_id=_int(item.get("drain_id", 0), f"shards[{index}].drain_id"),
    )


def unowned(component: str, shard_count: int) -> Ownership:
    """A component before its first placement: no owner, epoch 0."""
    return Ownership(component, tuple(Assignment(None, 0) for _ in range(shard_count)), 0)


def reassign(
    ownership: Ownership,
    moves: Mapping[int, tuple[str | None, int]],
    *,
    trace_id: str = "",
) -> Ownership:
    """Give each shard in ``moves`` to (site, session) under one new, larger epoch.

    All shards changed by one decision share the new epoch ``max_epoch + 1``; shards not in
    ``moves`` keep theirs. A move to the same owner and session still bumps the epoch (a
    re-grant), because its old epoch may have been used by a fenced predecessor.
    """
    if not moves:
        return ownership
    for index in moves:
        if not 0 <= index < len(ownership.shards):
            raise ValueError(f"{ownership.component}: no shard {index}")
    new_epoch = ownership.max_epoch + 1
    shards = tuple(
        Assignment(moves[i][0], new_epoch, moves[i][1]) if i in moves else a
        for i, a in enumerate(ownership.shards)
    )
    if trace_id:  # a new decision: its span is the caller's to set (the runtime does)
        return Ownership(ownership.component, shards, new_epoch, trace_id)
    return Ownership(ownership.component, shards, new_epoch, ownership.trace_id, ownership.span_id)


def set_draining(ownership: Ownership, indexes: Iterable[int], *, draining: bool) -> Ownership:
    """Start draining shards (under one new drain id), or cancel their drain.

    Owner and epochs stay; a new drain id takes the next number of the component's
    counter (``max_epoch``), so ids and epochs never repeat.
    """
    wanted = set(indexes)
    for index in wanted:
        if not 0 <= index < len(ownership.shards):
            raise ValueError(f"{ownership.component}: no shard {index}")
    wanted = {i for i in wanted if ownership.shards[i].owner is not None}
    if draining:
        fresh = [i for i in wanted if not ownership.shards[i].draining]
        if not fresh:
            return ownership
        drain_id = ownership.max_epoch + 1
        shards = tuple(
            replace(a, draining=True, drain_id=drain_id) if i in fresh else a
            for i, a in enumerate(ownership.shards)
        )
        return replace(ownership, shards=shards, max_epoch=drain_id)
    shards = tuple(
        replace(a, draining=False, drain_id=0) if i in wanted else a
        for i, a in enumerate(ownership.shards)
    )
    return replace(ownership, shards=shards)


class EpochFence:
    """The sink's check: refuse work stamped with an epoch older than any seen for its shard.

    ``enforce=False`` exists only for proving that the checkers catch a broken build
    (``BFM_TEST_DISABLE_FENCING=1``); it still records epochs but admits everything.
    """

    def __init__(self, *, enforce: bool = True) -> None:
        self.enforce = enforce
        self._highest: dict[tuple[str, int], int] = {}

    def highest(self, component: str, index: int) -> int:
        return self._highest.get((component, index), 0)

    def learn(self, component: str, index: int, epoch: int) -> None:
        """Raise the shard's known epoch (from an ownership document read by the sink)."""
        key = (component, index)
        if epoch > self._highest.get(key, 0):
            self._highest[key] = epoch

    def admit(self, component: str, index: int, epoch: int) -> bool:
        """True when work under ``epoch`` may be applied; raises the known epoch if so."""
        if self.enforce and epoch < self.highest(component, index):
            return False
        self.learn(component, index, epoch)
        return True
