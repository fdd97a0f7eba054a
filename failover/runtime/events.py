"""The decision history in the store: ``events/<sequence>``, newest ``DEFAULT_KEEP_EVENTS``.

The leading controller appends one ``Event`` per committed decision (``decision_event``,
``EventLog``) and every operator change (``failover.runtime.admin``) appends one too;
``read_events`` lists them, oldest first (``bfm events``, ``bfm status``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from failover.core.fencing import Ownership
from failover.ports import Conflict, CoordinationStore, OutcomeUnknown, StoreError
from failover.runtime.documents import EVENTS_PREFIX, Event, event_key, event_sequence

DEFAULT_KEEP_EVENTS = 1000


class EventLog:
    """Appends events under ``events/<sequence>`` and trims all but the newest ``keep``.

    The next sequence comes from the keys known to this writer (listed once, then kept);
    a Conflict on create means another writer got there first: list again and retry.
    Deletes of old events are compare-and-set on their revision, and their errors are
    ignored (another writer may have trimmed them already).
    """

    def __init__(self, store: CoordinationStore, *, keep: int = DEFAULT_KEEP_EVENTS) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.store, self.keep = store, keep
        self._known: dict[int, str] | None = None  # sequence -> revision

    def forget(self) -> None:
        """List the keys again before the next append (another writer may have added)."""
        self._known = None

    def append(self, event: Event, *, attempts: int = 3) -> int:
        """Write ``event`` as the newest entry; its sequence. Store errors propagate."""
        for _ in range(attempts):
            known = self._load()
            sequence = max(known, default=0) + 1
            try:
                known[sequence] = self.store.create(event_key(sequence), event.to_doc())
            except Conflict:
                self._known = None
                continue
            except OutcomeUnknown:
                self._known = None
                raise
            self._trim(known)
            return sequence
        raise Conflict(f"{EVENTS_PREFIX}: lost the race for the next sequence {attempts} times")

    def _load(self) -> dict[int, str]:
        if self._known is None:
            known = {}
            for item in self.store.list(EVENTS_PREFIX):
                sequence = event_sequence(item.key)
                if sequence is not None:
                    known[sequence] = item.revision
            self._known = known
        return self._known

    def _trim(self, known: dict[int, str]) -> None:
        for sequence in sorted(known)[: max(0, len(known) - self.keep)]:
            revision = known.pop(sequence)
            with contextlib.suppress(StoreError):
                self.store.delete(event_key(sequence), expected_revision=revision)


@dataclass(frozen=True)
class History:
    """Events read back, oldest first, and the entries that could not be read."""

    events: tuple[tuple[int, Event], ...]
    damaged: tuple[str, ...] = ()


def read_events(
    store: CoordinationStore, since_wall_s: float | None = None, *, limit: int | None = None
) -> History:
    """The recorded events at or after ``since_wall_s`` (all when None), oldest first.

    ``limit`` keeps only the newest that many.
    """
    events: list[tuple[int, Event]] = []
    damaged: list[str] = []
    for item in store.list(EVENTS_PREFIX):
        sequence = event_sequence(item.key)
        if sequence is None:
            continue
        try:
            event = Event.from_doc(item.value)
        except ValueError as err:
            damaged.append(f"{item.key}: {err}")
            continue
        if since_wall_s is None or event.at_wall_s >= since_wall_s:
            events.append((sequence, event))
    if limit is not None:
        events = events[-limit:] if limit > 0 else []
    return History(tuple(events), tuple(damaged))


def decision_event(
    *,
    at_wall_s: float,
    leader: str,
    term: int,
    component: str,
    kind: str,
    shards: Sequence[int],
    reason: str,
    before: Ownership,
    after: Ownership,
) -> Event:
    """The history entry of one committed ownership decision."""
    moves = tuple(
        (i, before.shards[i].owner, after.shards[i].owner)
        for i in shards
        if i < len(before.shards) and before.shards[i].owner != after.shards[i].owner
    )
    return Event(
        at_wall_s=at_wall_s,
        kind=kind,
        reason=reason,
        leader=leader,
        term=term,
        component=component,
        shards=tuple(shards),
        moves=moves,
        epoch_before=before.max_epoch,
        epoch_after=after.max_epoch,
        trace_id=after.trace_id,
    )
