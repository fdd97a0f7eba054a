"""The site agent's decisions: its lease, when to fence itself, which shards it may serve.

The runtime (or the simulator) performs the I/O and tells the agent what happened: each
renewal attempt and its start time, each direct heartbeat from a peer, each ownership
document read. The agent answers what to write and whether work may be accepted.

Sessions: a site that fenced itself never serves its old grants again. Its next lease
carries a new session number, and the controller re-grants work to that session under a
new epoch, so a grant made before the fence is void even if no one else took it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from failover.core.fencing import Assignment, Ownership
from failover.core.quorum import LeaseTiming, PeerReport, holder_may_act, in_failsafe


@dataclass(frozen=True)
class LeaseRecord:
    """A site's lease document: who, which session, how often renewed, what it reports."""

    holder: str
    session: int
    renew_count: int
    renewed_at_wall_s: float
    lease_duration_s: float
    components_up: tuple[str, ...] = ()
    drained: tuple[tuple[str, int, int], ...] = ()
    store_ok: bool = True
    epochs: tuple[tuple[str, int], ...] = ()  # the largest epoch seen per component
    released: tuple[tuple[str, int], ...] = ()  # grants up to this epoch given up (down)

    @property
    def max_epochs(self) -> dict[str, int]:
        return dict(self.epochs)

    def to_doc(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "session": self.session,
            "renew_count": self.renew_count,
            "renewed_at": self.renewed_at_wall_s,
            "lease_duration_s": self.lease_duration_s,
            "components_up": list(self.components_up),
            "drained": [list(d) for d in self.drained],
            "store_ok": self.store_ok,
            "epochs": dict(self.epochs),
            "released": dict(self.released),
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> LeaseRecord:
        """Parse a lease document; anything malformed raises ValueError naming the field."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"a lease document must be an object, got {type(doc).__name__}")
        try:
            holder = doc["holder"]
            if not isinstance(holder, str) or not holder:
                raise ValueError(f"field 'holder' must be a site name, got {holder!r}")
            components = doc.get("components_up", [])
            if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
                raise ValueError(
                    f"field 'components_up' must be a list of names, got {components!r}"
                )
            store_ok = doc.get("store_ok", True)
            if not isinstance(store_ok, bool):
                raise ValueError(f"field 'store_ok' must be true or false, got {store_ok!r}")
            return LeaseRecord(
                holder=holder,
                session=_count(doc["session"], "session"),
                renew_count=_count(doc["renew_count"], "renew_count"),
                renewed_at_wall_s=_seconds(doc["renewed_at"], "renewed_at"),
                lease_duration_s=_seconds(doc["lease_duration_s"], "lease_duration_s"),
                components_up=tuple(components),
                drained=_drained(doc.get("drained", [])),
                store_ok=store_ok,
                epochs=_epochs(doc.get("epochs", {}), "epochs"),
                released=_epochs(doc.get("released", {}), "released"),
            )
        except KeyError as missing:
            raise ValueError(f"lease document lacks field {missing}") from None

    def summary(self) -> tuple[str, int, int]:
        """What an observer compares: any renewal changes it."""
        return (self.holder, self.session, self.renew_count)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"field {name!r} must be a non-negative integer, got {value!r}")
    return value


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"field {name!r} must be a number of seconds, got {value!r}")
    return float(value)


def _epochs(value: Any, name: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping):
        raise ValueError(f"field {name!r} must be an object of component -> epoch, got {value!r}")
    return tuple(sorted((str(c), _count(n, f"{name}.{c}")) for c, n in value.items()))


def _drained(value: Any) -> tuple[tuple[str, int, int], ...]:
    if not isinstance(value, list):
        raise ValueError(f"field 'drained' must be a list, got {value!r}")
    result = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
            raise ValueError(
                f"field 'drained' holds [component, index, drain_id] items, got {item!r}"
            )
        result.append((item[0], _count(item[1], "drained index"), _count(item[2], "drain_id")))
    return tuple(result)


class SiteAgent:
    """One worker site's lease holder and gatekeeper for its shards."""

    def __init__(
        self,
        site: str,
        *,
        timing: LeaseTiming,
        peers: Sequence[str],
        fencing_enabled: bool = True,
    ) -> None:
        self.site = site
        self.timing = timing
        self.fencing_enabled = fencing_enabled
        self.session = 0
        self.fenced = True
        self.renew_count = 0
        self.last_renew_start_s: float | None = None
        self.store_ok = False
        self.peers: dict[str, PeerReport | None] = {p: None for p in peers if p != site}
        self.fence_count = 0
        self.acked_drains: set[tuple[str, int, int]] = set()
        self.released: dict[str, int] = {}

    def lease_record(
        self,
        *,
        wall_s: float,
        components_up: Iterable[str],
        drained: Iterable[tuple[str, int, int]] = (),
        epochs: Mapping[str, int] | None = None,
    ) -> LeaseRecord:
        """The document to write for the next renewal (a new session after a fence).

        Shards it lists as drained are not served from now on, even in failsafe, whether
        or not the write lands: once acknowledged, their transfer may be written any time.
        """
        drained = tuple(sorted(drained))
        self.acked_drains.update(drained)
        components = tuple(sorted(components_up))
        up = set(components)
        for component, epoch in (epochs or {}).items():
            # Reporting a component down gives its grants up: the controller may move them
            # at once, so they are never served again, even when the component comes back.
            if component not in up and epoch > self.released.get(component, 0):
                self.released[component] = epoch
        return LeaseRecord(
            holder=self.site,
            session=self.session + 1 if self.fenced else self.session,
            renew_count=self.renew_count + 1,
            renewed_at_wall_s=wall_s,
            lease_duration_s=self.timing.lease_duration_s,
            components_up=components,
            drained=drained,
            epochs=tuple(sorted((epochs or {}).items())),
            released=tuple(sorted(self.released.items())),
        )

    def renewed(self, record: LeaseRecord, *, started_at_s: float) -> None:
        """The renewal that started at ``started_at_s`` (monotonic) was written.

        A record built before this agent fenced itself carries the old session: it
        refreshes the lease but never revives that session (its grants stay void).
        """
        self.store_ok = True
        self.renew_count = max(self.renew_count, record.renew_count)
        if self.fenced and record.session <= self.session:
            return
        self.last_renew_start_s = started_at_s
        if self.fenced:
            self.session = record.session
            self.fenced = False

    def continue_from(self, record: LeaseRecord) -> None:
        """Before its first renewal, a (re)started agent continues the stored lease's numbering.

        Sessions only grow, so grants made to the site's previous process stay void.
        """
        if self.fenced and record.holder == self.site:
            self.session = max(self.session, record.session)
            self.renew_count = max(self.renew_count, record.renew_count)

    def raise_session_floor(self, session: int) -> None:
        """Before a new session opens: it must exceed every session granted work so far."""
        if self.fenced:
            self.session = max(self.session, session)

    def store_failed(self) -> None:
        """A renewal failed (store unavailable, or outcome unknown): no renewal counted.

        Only renewals set ``store_ok``: a read that succeeds does not end the failsafe,
        the next renewal (within ``renew_interval_s``) does, or the agent fences.
        """
        self.store_ok = False

    def heard_peer(self, peer: str, *, store_ok: bool, now_s: float) -> None:
        """A direct heartbeat from another worker arrived.

        Only "I cannot reach the store" reports are kept: the failsafe needs a fresh one
        from every peer. A peer that has the store back does not end this site's failsafe
        at once; the failsafe ends when the last "store down" report grows older than
        ``failsafe_confirm_s``, which leaves time for this site's own next renewal.
        """
        if peer in self.peers and not store_ok:
            self.peers[peer] = PeerReport(now_s, store_ok)

    def check(self, now_s: float) -> bool:
        """Whether the site may serve now; fences it (until a new session) when not."""
        if self.fenced:
            return False
        if not self.fencing_enabled:
            return True
        if not holder_may_act(
            now_s=now_s,
            last_renew_start_s=self.last_renew_start_s,
            timing=self.timing,
            store_ok=self.store_ok,
            peers=self.peers,
        ):
            self.fenced = True
            self.fence_count += 1
            return False
        return True

    def serving_deadline_s(self, now_s: float) -> float | None:
        """Until when (monotonic) the right to serve that holds now lasts, or None if none.

        Work a router admits carries it, so the sink on the same host refuses work that a
        paused process admitted before its lease ran out (the fence on the lease).
        """
        if self.fenced or self.last_renew_start_s is None:
            return None
        deadline_s = self.last_renew_start_s + self.timing.renew_deadline_s
        if now_s <= deadline_s or not self.fencing_enabled:
            return deadline_s if self.fencing_enabled else float("inf")
        if not self.failsafe(now_s):
            return None
        reports = [r for r in self.peers.values() if r is not None]
        return min(r.received_at_s for r in reports) + self.timing.failsafe_confirm_s

    def failsafe(self, now_s: float) -> bool:
        """The store is out for everyone: ownership is frozen, nobody can take work over."""
        return in_failsafe(
            now_s=now_s, timing=self.timing, store_ok=self.store_ok, peers=self.peers
        )

    def may_serve(
        self,
        assignment: Assignment,
        *,
        component: str,
        index: int,
        now_s: float,
        component_up: bool,
    ) -> bool:
        """Whether work for the shard (component, index) may be accepted here now.

        A draining shard waits for its transfer. While the store is out for everyone no
        transfer can happen, so it is served on, unless its drain was already acknowledged
        (the transfer may have been written just before the outage).
        """
        if not component_up or assignment.owner != self.site:
            return False
        if assignment.epoch <= self.released.get(component, 0):
            return False
        if assignment.session != self.session or not self.check(now_s):
            return False
        if not assignment.draining:
            return True
        acked = (component, index, assignment.drain_id) in self.acked_drains
        return not acked and self.failsafe(now_s)

    def drained(
        self,
        ownerships: Iterable[Ownership],
        *,
        busy: Collection[tuple[str, int]] = (),
    ) -> list[tuple[str, int, int]]:
        """Shards drained away from this site, acknowledged by listing them in the lease.

        A shard with work still in flight (``busy``: component, index) is not drained yet:
        acknowledging it early would let the next owner start while this one still writes.
        """
        return [
            (o.component, i, a.drain_id)
            for o in ownerships
            for i, a in enumerate(o.shards)
            if a.draining
            and a.owner == self.site
            and a.session == self.session
            and (o.component, i) not in busy
        ]
