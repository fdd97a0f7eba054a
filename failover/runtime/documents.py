"""The store's keys and documents as the runtime reads and writes them.

Keys (one JSON document each, ARCHITECTURE.md section 7):

- ``controller/leader``: the controllers' leader lease ``{holder, term, renew_count}``;
- ``sites/<site>/lease``: a worker site's lease (``failover.core.agent.LeaseRecord``);
- ``ownership/<component>``: a component's ownership (``failover.core.fencing.Ownership``).

Parsing is cached by (key, revision), so a document is parsed once however often it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from failover.core.agent import LeaseRecord
from failover.core.fencing import Ownership
from failover.ports import Versioned

LEADER_KEY = "controller/leader"
OWNERSHIP_PREFIX = "ownership/"

T = TypeVar("T")


def lease_key(site: str) -> str:
    return f"sites/{site}/lease"


def ownership_key(component: str) -> str:
    return f"{OWNERSHIP_PREFIX}{component}"


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


class Parsed(Generic[T]):
    """Parses documents of one kind, once per (key, revision)."""

    def __init__(self, parse: Callable[[Mapping[str, Any]], T]) -> None:
        self._parse = parse
        self._latest: dict[str, tuple[str, T]] = {}

    def __call__(self, item: Versioned) -> T:
        cached = self._latest.get(item.key)
        if cached is not None and cached[0] == item.revision:
            return cached[1]
        value = self._parse(item.value)
        self._latest[item.key] = (item.revision, value)
        return value


def ownership_parser() -> Parsed[Ownership]:
    return Parsed(Ownership.from_doc)


def lease_parser() -> Parsed[LeaseRecord]:
    return Parsed(LeaseRecord.from_doc)
