"""The history of a run and the checker that judges it.

The checker sees only what producers were told (sent, acknowledged) and what the ledger
holds (which site applied which message under which epoch, when), plus the times at which
each ownership document was committed. It never reads counters of the code under test.

Judgement:
- an entry is *stale* when, at the moment it was applied, a larger epoch had already been
  committed for its shard (work accepted from a superseded owner);
- an epoch is *dual-owned* when entries under it came from two different sites;
- stale entries do not count as kept: when the superseded owner rejoins, the new owner's
  history wins and its writes are discarded (as Redis's resumed old primary's were), so an
  acknowledged message is *lost* unless it has at least one non-stale entry;
- a message applied more than once in kept entries is a duplicate.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from failover.chaos.report import FaultEvent, Report

ShardKey = tuple[str, int]
DOUBLE_FAULT = "double_fault"
"""The kind under which a fault that began or ended while another was active is counted."""


@dataclass(frozen=True)
class LedgerEntry:
    at_s: float
    message_id: int
    shard: ShardKey
    epoch: int
    site: str


@dataclass
class History:
    """Everything a run recorded, appended to as it happens."""

    sent: dict[int, float] = field(default_factory=dict)  # message id -> first send
    acked: dict[int, float] = field(default_factory=dict)  # message id -> first ack
    message_shard: dict[int, ShardKey] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    commits: dict[ShardKey, list[tuple[float, int]]] = field(default_factory=dict)
    faults: list[FaultEvent] = field(default_factory=list)

    def send(self, message_id: int, shard: ShardKey, at_s: float) -> None:
        if message_id not in self.sent:
            self.sent[message_id] = at_s
            self.message_shard[message_id] = shard

    def ack(self, message_id: int, at_s: float) -> None:
        self.acked.setdefault(message_id, at_s)

    def apply(self, entry: LedgerEntry) -> None:
        self.ledger.append(entry)

    def commit(self, shard: ShardKey, epoch: int, at_s: float) -> None:
        """An ownership document granting ``shard`` under ``epoch`` was committed."""
        self.commits.setdefault(shard, []).append((at_s, epoch))

    def epoch_at(self, shard: ShardKey, at_s: float) -> int:
        """The largest epoch committed for ``shard`` at or before ``at_s``."""
        return max((e for t, e in self.commits.get(shard, ()) if t <= at_s), default=0)


@dataclass
class Verdict:
    acked: int
    acked_lost: int
    duplicates_applied: int
    stale_epoch_accepts: int
    dual_owner_epochs: int
    lost_ids: list[int]
    stale_entries: list[LedgerEntry]


def check(history: History) -> Verdict:
    """Judge the history (see the module docstring)."""
    max_epoch: dict[ShardKey, list[tuple[float, int]]] = {}
    for shard, commits in history.commits.items():
        running, best = [], 0
        for at_s, epoch in sorted(commits):
            best = max(best, epoch)
            running.append((at_s, best))
        max_epoch[shard] = running
    kept: dict[int, int] = defaultdict(int)
    stale: list[LedgerEntry] = []
    sites_per_epoch: dict[tuple[ShardKey, int], set[str]] = defaultdict(set)
    for entry in history.ledger:
        sites_per_epoch[(entry.shard, entry.epoch)].add(entry.site)
        running = max_epoch.get(entry.shard, [])
        pos = bisect.bisect_right(running, (entry.at_s, float("inf")))
        current = running[pos - 1][1] if pos else 0
        if entry.epoch < current:
            stale.append(entry)
        else:
            kept[entry.message_id] += 1
    lost = sorted(m for m in history.acked if kept.get(m, 0) == 0)
    return Verdict(
        acked=len(history.acked),
        acked_lost=len(lost),
        duplicates_applied=sum(n - 1 for n in kept.values() if n > 1),
        stale_epoch_accepts=len(stale),
        dual_owner_epochs=sum(1 for sites in sites_per_epoch.values() if len(sites) > 1),
        lost_ids=lost,
        stale_entries=stale,
    )


def unavailability_by_fault(
    history: History, *, end_s: float, fault_kinds: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Per fault kind, one value per fault: the longest a message waited because of it.

    Each timeline event (an injection, or a heal listed in ``fault_kinds`` such as a site
    return) opens a window that lasts until the next event. A message waiting at some
    point in the window counts from the window start (or its first send, if later) until
    its acknowledgement (``end_s`` if none), but no further than the next *injection*: from
    then on its wait is the newer fault's doing. A heal does not cut it short, so a
    failover outlasting a short fault is still the fault's. Faults that begin or end while
    another is active are counted as ``double_fault``, so each kind's numbers are single
    faults.
    """
    events = sorted(history.faults, key=lambda f: f.at_s)
    mapping = fault_kinds or {}
    starts = [f.at_s for f in events]
    cut_at = [end_s] * len(events)  # the next injection after each event
    next_inject = end_s
    for k in range(len(events) - 1, -1, -1):
        cut_at[k] = next_inject
        if events[k].action == "inject":
            next_inject = events[k].at_s
    longest = [0.0] * len(events)
    for message_id, sent_s in history.sent.items():
        acked_s = history.acked.get(message_id, end_s)
        if not events or acked_s <= starts[0]:
            continue
        first = max(0, bisect.bisect_right(starts, sent_s) - 1)
        last = bisect.bisect_right(starts, acked_s) - 1
        for k in range(first, last + 1):
            wait = min(acked_s, cut_at[k]) - max(sent_s, starts[k])
            longest[k] = max(longest[k], wait)
    result: dict[str, list[float]] = {}
    active = 0
    for event, value in zip(events, longest, strict=True):
        overlapping = active > 0 if event.action == "inject" else active > 1
        active += 1 if event.action == "inject" else -1
        label = mapping.get(f"{event.kind}:{event.action}")
        if label is None:
            label = event.kind if event.action == "inject" else None
        if label is None:
            continue
        result.setdefault(DOUBLE_FAULT if overlapping else label, []).append(value)
    return result


def fill_report(report: Report, history: History, *, end_s: float) -> Verdict:
    verdict = check(history)
    report.acked = verdict.acked
    report.acked_lost = verdict.acked_lost
    report.duplicates_applied = verdict.duplicates_applied
    report.stale_epoch_accepts = verdict.stale_epoch_accepts
    report.dual_owner_epochs = verdict.dual_owner_epochs
    return verdict
