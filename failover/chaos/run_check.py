"""Judge a run directory of real processes with the history checker.

Reads what the producers were told (``history-*.jsonl``), what every module recorded
(``ledger-<site>-<component>.db``) and when each grant was committed (the controllers'
``decision`` log lines in ``site-*.log``), and fills the common report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from failover.adapters.store_url import StoreUrlError, open_store
from failover.chaos.history import History, LedgerEntry, check, unavailability_by_fault
from failover.chaos.report import FaultEvent, Report, Violation
from failover.core.fencing import Ownership
from failover.ports import CoordinationStore, StoreError
from failover.workload.endpoints import Endpoints
from failover.workload.ledger import Ledger

GRANT_KINDS = {"initial", "failover", "transfer"}
HEAL_LABELS = {
    "site_crash:heal": "site_return",
    "component_pause:heal": "component_resume",
    "cpu_hog:heal": "cpu_hog_end",
    "drain:heal": "undrain",
    "switchover:heal": "rebalance",
    # bfm chaos: what follows a heal (a site back, a process resumed) counts apart
    "site_isolation:heal": "isolation_heal",
    "pair_cut:heal": "pair_heal",
    "one_way_cut:heal": "one_way_heal",
    "link_flap:heal": "flap_end",
    "leader_pause:heal": "leader_resume",
    "owner_pause:heal": "owner_resume",
    "store_member_crash:heal": "store_member_return",
}


def load_history(run_dir: Path, histories: str = "history-*.jsonl") -> History:
    """What the producers whose files match ``histories`` were told, with every ledger
    and every grant decision of the run."""
    history = History()
    ids: dict[str, int] = {}

    def number(message_id: str) -> int:
        return ids.setdefault(message_id, len(ids))

    for path in sorted(run_dir.glob(histories)):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the message stays unacknowledged
            if not isinstance(item, dict):
                continue
            if item.get("op") == "send":
                history.send(number(item["id"]), (item["component"], int(item["shard"])), item["t"])
            elif item.get("op") == "ack":
                history.ack(number(item["id"]), item["t"])
    for path in sorted(run_dir.glob("ledger-*.db")):
        site = path.stem.split("-")[1]
        ledger = Ledger(path, site=site)
        for row in ledger.rows():
            entry = LedgerEntry(
                row.applied_at, number(row.id), (row.component, row.shard), row.epoch, row.site
            )
            history.apply(entry)
        ledger.close()
    for path in sorted(run_dir.glob("site-*.log")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(item, dict):
                continue
            if item.get("event") == "decision" and item.get("kind") in GRANT_KINDS:
                for index, epoch in zip(item["shards"], item["epochs"], strict=True):
                    history.commit(
                        (item["component"], int(index)), int(epoch), float(item["at_wall_s"])
                    )
    return history


def judge(
    run_dir: Path,
    *,
    faults: Sequence[FaultEvent] = (),
    end_s: float | None = None,
    shards_per_site: dict[str, dict[str, int]] | None = None,
    availability_of: str | None = None,
) -> Report:
    """The report of a run: the checker's verdict, and unavailability per injected fault.

    ``shards_per_site``: who owned what when the traffic ended (taken before the processes
    were stopped, which moves work as they go); read from the store now when not given.
    ``availability_of``: a glob of the history files whose waits make the unavailability
    figures (default: all; the checker's counts always judge every producer).
    """
    history = load_history(run_dir)
    history.faults.extend(faults)
    verdict = check(history)
    report = Report(
        acked=verdict.acked,
        acked_lost=verdict.acked_lost,
        duplicates_applied=verdict.duplicates_applied,
        stale_epoch_accepts=verdict.stale_epoch_accepts,
        dual_owner_epochs=verdict.dual_owner_epochs,
    )
    last_s = max([*history.acked.values(), *history.sent.values()], default=0.0)
    end = end_s if end_s is not None else last_s
    report.extra = {"sent": len(history.sent), "unacknowledged": len(history.sent) - verdict.acked}
    if availability_of is not None:
        history = load_history(run_dir, availability_of)
        history.faults.extend(faults)
    waits = [history.acked.get(m, end) - s for m, s in history.sent.items()]
    report.max_unavailability_s = max(waits, default=0.0)  # never acked: waited to the end
    for name, count in (
        ("no_acked_loss", verdict.acked_lost),
        ("single_writer", verdict.stale_epoch_accepts),
        ("dual_owner", verdict.dual_owner_epochs),
    ):
        if count:
            report.violations.append(Violation(name, 0.0, f"{count} found in {run_dir}"))
    report.unavailability_s = unavailability_by_fault(history, end_s=end, fault_kinds=HEAL_LABELS)
    report.faults = list(faults)
    report.shards_per_site = final_shards(run_dir) if shards_per_site is None else shards_per_site
    return report


def final_shards(run_dir: Path) -> dict[str, dict[str, int]]:
    """Component -> site -> shards it owns at the end, from the run's store ({} if none)."""
    try:
        store = open_store(Endpoints.load(run_dir).store)
    except (OSError, ValueError, StoreUrlError, StoreError):
        return {}
    try:
        return shards_owned(store)
    finally:
        store.close()


def shards_owned(store: CoordinationStore) -> dict[str, dict[str, int]]:
    """Component -> site -> shards it owns now ({} if the store cannot say)."""
    counts: dict[str, dict[str, int]] = {}
    try:
        for item in store.list("ownership/"):
            ownership = Ownership.from_doc(item.value)
            per_site = counts.setdefault(ownership.component, {})
            for a in ownership.shards:
                if a.owner is not None:
                    per_site[a.owner] = per_site.get(a.owner, 0) + 1
    except (StoreError, ValueError):
        return {}
    return counts
