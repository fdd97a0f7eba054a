"""The side-by-side numbers of BFM and Redis Sentinel under one fault, from their histories.

"Time until writes succeed again at the survivor" means the same for both:

- Sentinel has one owner of all data (the primary at a): the time from the fault to the
  first write acknowledged by the new primary at b (``SentinelOutcome.recovery_s`` of the
  reconnecting client, which asks Sentinel again after each failed write).
- BFM has many owners (shards): for every shard that site a served when the fault struck,
  the time from the fault to the first acknowledgement of a message for it by site b;
  :func:`survivor_recovery` gives the longest (when all of a's work is writable again at
  b) and the median. A shard that never got an acknowledgement from b counts as not
  recovered (``None``).

"Writes acknowledged by a stale owner": Sentinel's ``stale_acked`` (acknowledged by the old
primary after the promotion; all later lost); BFM's ``stale_epoch_accepts`` (applied under
a superseded epoch, judged by the checker from the ledgers) plus its ``acked_lost``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from failover.chaos.sentinel_analysis import read_history

Shard = tuple[str, int]


@dataclass(frozen=True)
class Recovery:
    longest_s: float | None  # None: some shard of the failed site never came back at b
    median_s: float | None
    shards: int  # how many shards the failed site served at the fault
    not_recovered: int


read_records = read_history  # BFM's producers and Sentinel's writers: the same JSON lines


def survivor_recovery(
    records: Iterable[Mapping[str, Any]],
    fault_at_s: float,
    *,
    failed: str = "a",
    survivor: str = "b",
) -> Recovery:
    """Per shard that ``failed`` served at ``fault_at_s``, the time until ``survivor``
    acknowledged a message of it (see the module docstring)."""
    shard_of: dict[str, Shard] = {}
    last_site: dict[Shard, tuple[float, str]] = {}  # before the fault: who acknowledged last
    first_after: dict[Shard, float] = {}  # after the fault: the survivor's first ack
    for r in records:
        op = r.get("op")
        if op == "send":
            shard_of[str(r["id"])] = (str(r["component"]), int(r["shard"]))
        elif op == "ack" and str(r.get("id")) in shard_of:
            shard, t, site = shard_of[str(r["id"])], float(r["t"]), str(r.get("site"))
            if t <= fault_at_s:
                if shard not in last_site or last_site[shard][0] <= t:
                    last_site[shard] = (t, site)
            elif site == survivor and (shard not in first_after or t < first_after[shard]):
                first_after[shard] = t
    owned = [s for s, (_, site) in last_site.items() if site == failed]
    waits = [first_after[s] - fault_at_s for s in owned if s in first_after]
    missing = len(owned) - len(waits)
    return Recovery(
        longest_s=None if missing or not waits else round(max(waits), 3),
        median_s=round(statistics.median(waits), 3) if waits else None,
        shards=len(owned),
        not_recovered=missing,
    )


def ratio(bfm_s: float | None, sentinel_s: float | None) -> float | None:
    """BFM's time over Sentinel's (below 1: BFM is faster); None if either is missing."""
    if bfm_s is None or sentinel_s is None or sentinel_s <= 0:
        return None
    return round(bfm_s / sentinel_s, 3)
