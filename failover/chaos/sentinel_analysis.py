"""Judging a Redis Sentinel baseline run from the writers' history (see docs/sentinel.md).

The inputs are only what the clients saw (the history the writer appended), when the
fault was injected, when Sentinel switched the master (its ``+switch-master`` log line)
and which keys the final primary holds. Numbers:

- ``recovery_s``: fault -> first write acknowledged by the new primary;
- ``stale_acked``: writes acknowledged by the old primary after ``+switch-master``;
- ``acked_lost``: acknowledged writes whose key the final primary does not hold.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# "1234:X 05 Mar 2024 10:00:00.123 # +switch-master bfm 10.0.0.1 6379 10.0.0.2 6379"
_LOG_LINE = re.compile(r"^\d+:\w (\d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2})\.(\d{3}) \S (.*)$")


def read_history(path: Path) -> list[dict[str, Any]]:
    """The writer's JSON lines; a torn last line (writer killed mid-write) is skipped."""
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def log_events(lines: Iterable[str], event: str) -> list[tuple[float, str]]:
    """(wall time, rest of the message) of each Redis log line whose message starts with
    ``event`` (e.g. ``+switch-master``). Redis logs local time with milliseconds."""
    found: list[tuple[float, str]] = []
    for line in lines:
        match = _LOG_LINE.match(line)
        if match is None or not match.group(3).startswith(event):
            continue
        stamp = time.mktime(time.strptime(match.group(1), "%d %b %Y %H:%M:%S"))
        found.append((stamp + int(match.group(2)) / 1000, match.group(3)[len(event) :].strip()))
    return found


@dataclass(frozen=True)
class ClientOutcome:
    sent: int
    acked: int
    failed: int
    recovery_s: float | None  # fault -> this client's first ack by the new primary
    stale_acked: int
    acked_lost: int


@dataclass(frozen=True)
class SentinelOutcome:
    """What one fault did to the writers. Times are wall-clock seconds (``time.time()``)."""

    fault_at_wall_s: float
    promoted_at_wall_s: float | None  # earliest +switch-master to the new primary
    old_primary: str  # "host:port"
    new_primary: str
    recovery_s: float | None  # fault -> first write acknowledged by the new primary
    stale_acked: int  # acknowledged by the old primary after the promotion
    stale_window_s: float | None  # promotion -> the old primary's last acknowledgement
    acked_lost: int  # acknowledged, missing from the final primary
    stale_acked_lost: int  # of those, acknowledged as stale
    sent: int
    acked: int
    failed: int
    by_client: Mapping[str, ClientOutcome] = field(default_factory=dict)
    lost_ids: Sequence[str] = ()


def analyse(
    records: Sequence[Mapping[str, Any]],
    fault_at_wall_s: float,
    *,
    old_primary: str,
    new_primary: str,
    promoted_at_wall_s: float | None,
    final_ids: Iterable[str],
) -> SentinelOutcome:
    """Judge a history. ``final_ids`` are the write ids the final primary holds."""
    kept = set(final_ids)
    client_of: dict[str, str] = {}
    acks: list[tuple[float, str, str]] = []  # (t, id, server)
    sent: dict[str, int] = {}
    failed: dict[str, int] = {}
    for rec in records:
        client = str(rec.get("client", "?"))
        op, write_id = rec.get("op"), str(rec.get("id"))
        if op == "send":
            client_of[write_id] = client
            sent[client] = sent.get(client, 0) + 1
        elif op == "ack":
            acks.append((float(rec["t"]), write_id, str(rec.get("server"))))
        elif op == "fail":
            failed[client] = failed.get(client, 0) + 1

    def is_stale(t: float, server: str) -> bool:
        return server == old_primary and promoted_at_wall_s is not None and t > promoted_at_wall_s

    stale = [(t, i) for t, i, s in acks if is_stale(t, s)]
    lost = sorted({i for _, i, _ in acks} - kept)
    lost_set = set(lost)
    by_client: dict[str, ClientOutcome] = {}
    for client in sorted(set(sent) | set(failed) | {client_of.get(i, "?") for _, i, _ in acks}):
        mine = [(t, i, s) for t, i, s in acks if client_of.get(i, "?") == client]
        firsts = [t for t, _, s in mine if s == new_primary and t >= fault_at_wall_s]
        by_client[client] = ClientOutcome(
            sent=sent.get(client, 0),
            acked=len(mine),
            failed=failed.get(client, 0),
            recovery_s=min(firsts) - fault_at_wall_s if firsts else None,
            stale_acked=sum(1 for t, _, s in mine if is_stale(t, s)),
            acked_lost=sum(1 for _, i, _ in mine if i in lost_set),
        )
    recoveries = [c.recovery_s for c in by_client.values() if c.recovery_s is not None]
    return SentinelOutcome(
        fault_at_wall_s=fault_at_wall_s,
        promoted_at_wall_s=promoted_at_wall_s,
        old_primary=old_primary,
        new_primary=new_primary,
        recovery_s=min(recoveries) if recoveries else None,
        stale_acked=len(stale),
        stale_window_s=(
            max(t for t, _ in stale) - promoted_at_wall_s
            if stale and promoted_at_wall_s is not None
            else None
        ),
        acked_lost=len(lost),
        stale_acked_lost=sum(1 for _, i in stale if i in lost_set),
        sent=sum(sent.values()),
        acked=len(acks),
        failed=sum(failed.values()),
        by_client=by_client,
        lost_ids=tuple(lost),
    )
