"""The checker over a hand-built run directory: producer history, module ledgers and the
controllers' decision log lines, in the formats the real processes write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from failover.adapters.sqlite_store import SqliteStore
from failover.chaos.history import check
from failover.chaos.report import FaultEvent
from failover.chaos.run_check import judge, load_history
from failover.core.fencing import Assignment, Ownership
from failover.core.topology import default_topology
from failover.workload.endpoints import allocate
from failover.workload.envelope import Envelope
from failover.workload.ledger import Ledger


class RunDir:
    """Writes a run directory the way producers, modules and site processes do."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history_path = path / "history-1.jsonl"
        self.history_path.touch()

    def _append(self, path: Path, item: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(item, separators=(",", ":")) + "\n")

    def send(self, msg_id: str, shard: int, t: float, *, component: str = "eap") -> None:
        self._append(
            self.history_path,
            {"op": "send", "id": msg_id, "component": component, "shard": shard, "t": t},
        )

    def ack(self, msg_id: str, t: float, *, site: str, epoch: int) -> None:
        self._append(
            self.history_path, {"op": "ack", "id": msg_id, "t": t, "site": site, "epoch": epoch}
        )

    def delivered(self, msg_id: str, shard: int, sent_s: float, *, site: str, epoch: int) -> None:
        """Sent, applied by ``site`` under ``epoch`` half a second later, then acked."""
        self.send(msg_id, shard, sent_s)
        self.apply(site, [(msg_id, shard, epoch)], at_s=sent_s + 0.5)
        self.ack(msg_id, sent_s + 1.0, site=site, epoch=epoch)

    def apply(
        self, site: str, entries: list[tuple[str, int, int]], *, at_s: float, component: str = "eap"
    ) -> None:
        """One module batch: (id, shard, epoch) per message, committed at ``at_s``."""
        kind = {"eap": "alarm", "eep": "event"}[component]
        ledger = Ledger(self.path / f"ledger-{site}-{component}.db", site=site)
        envs = [Envelope(i, kind, f"key-{i}", shard, at_s, epoch=e) for i, shard, e in entries]
        ledger.apply(envs, applied_at=at_s)
        ledger.close()

    def decision(
        self,
        kind: str,
        shards: list[int],
        epochs: list[int],
        at_s: float,
        *,
        site: str = "a",
        component: str = "eap",
        max_epoch: int | None = None,
    ) -> None:
        """A controller's decision line, as ``site_process`` logs it through ``JsonLines``."""
        self._append(
            self.path / f"site-{site}.log",
            {
                "ts": "2023-11-14T22:13:20.000Z",
                "level": "info",
                "logger": "bfm.site",
                "msg": f"{kind} {component} {shards}: test",
                "event": "decision",
                "kind": kind,
                "component": component,
                "shards": shards,
                "epoch": max(epochs) if max_epoch is None else max_epoch,
                "epochs": epochs,
                "at_wall_s": at_s,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            },
        )

    def log_noise(self, site: str = "a") -> None:
        """Lines a site log also holds: other events, a warning, a traceback."""
        with (self.path / f"site-{site}.log").open("a", encoding="utf-8") as out:
            out.write(json.dumps({"event": "leader", "leading": True, "msg": "leader"}) + "\n")
            out.write("Traceback (most recent call last):\n  File 'x', line 1\n")
            out.write(json.dumps({"event": "fenced", "kind": "failover", "shards": [0]}) + "\n")

    def message_numbers(self) -> dict[str, int]:
        """The checker's number for each id: order of first appearance in the history."""
        numbers: dict[str, int] = {}
        for line in self.history_path.read_text(encoding="utf-8").splitlines():
            numbers.setdefault(json.loads(line)["id"], len(numbers))
        return numbers


def test_a_clean_run_has_no_violations(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.log_noise()
    run.decision("initial", [0, 1, 2], [1, 1, 1], at_s=100.0)
    for i in range(6):
        run.delivered(f"m{i}", i % 3, 101.0 + i, site="a", epoch=1)
    run.send("slow", 2, 110.0)
    run.apply("a", [("slow", 2, 1)], at_s=113.0)
    run.ack("slow", 113.5, site="a", epoch=1)
    report = judge(tmp_path)
    assert report.violations == []
    assert report.ok
    assert (report.acked, report.acked_lost, report.duplicates_applied) == (7, 0, 0)
    assert (report.stale_epoch_accepts, report.dual_owner_epochs) == (0, 0)
    assert report.max_unavailability_s == 3.5
    assert report.extra == {"sent": 7, "unacknowledged": 0}
    assert report.unavailability_s == {}
    assert report.faults == []


def test_work_applied_under_a_superseded_epoch_is_stale_and_its_ack_is_lost(
    tmp_path: Path,
) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0, 1], [1, 1], at_s=100.0)
    run.delivered("early", 0, 150.0, site="a", epoch=1)  # before the failover: fine
    run.decision("failover", [0], [2], at_s=200.0, site="b")  # b's controller took shard 0
    run.send("late", 0, 240.0)
    run.apply("a", [("late", 0, 1)], at_s=250.0)  # a paused old owner accepts it anyway
    run.ack("late", 251.0, site="a", epoch=1)
    run.delivered("after", 0, 260.0, site="b", epoch=2)
    run.delivered("other-shard", 1, 260.0, site="a", epoch=1)  # shard 1 stayed with a
    report = judge(tmp_path)
    assert report.stale_epoch_accepts == 1
    assert report.acked_lost == 1
    assert report.acked == 4
    assert report.dual_owner_epochs == 0
    assert {v.invariant for v in report.violations} == {"no_acked_loss", "single_writer"}
    assert all(str(tmp_path) in v.detail for v in report.violations)
    verdict = check(load_history(tmp_path))
    assert verdict.lost_ids == [run.message_numbers()["late"]]
    [stale] = verdict.stale_entries
    assert (stale.site, stale.epoch, stale.shard, stale.at_s) == ("a", 1, ("eap", 0), 250.0)


def test_a_stale_entry_with_a_kept_retry_elsewhere_is_not_lost(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0], [1], at_s=100.0)
    run.decision("failover", [0], [2], at_s=200.0, site="b")
    run.send("m1", 0, 190.0)
    run.apply("a", [("m1", 0, 1)], at_s=205.0)  # stale: its ack to the producer was lost
    run.apply("b", [("m1", 0, 2)], at_s=206.0)  # the retry, applied by the new owner
    run.ack("m1", 206.5, site="b", epoch=2)
    report = judge(tmp_path)
    assert (report.stale_epoch_accepts, report.acked_lost, report.duplicates_applied) == (1, 0, 0)
    assert [v.invariant for v in report.violations] == ["single_writer"]


def test_a_message_applied_by_both_owners_in_turn_is_a_duplicate_not_a_violation(
    tmp_path: Path,
) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0], [1], at_s=100.0)
    run.send("m1", 0, 150.0)
    run.apply("a", [("m1", 0, 1)], at_s=150.5)  # applied, but the ack never reached it
    run.decision("failover", [0], [2], at_s=200.0, site="b")
    run.apply("b", [("m1", 0, 2)], at_s=201.0)
    run.ack("m1", 201.5, site="b", epoch=2)
    report = judge(tmp_path)
    assert report.duplicates_applied == 1
    assert report.violations == []


def test_one_epoch_used_by_two_sites_is_a_dual_owner_epoch(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0], [1], at_s=100.0)
    run.delivered("m1", 0, 150.0, site="a", epoch=1)
    run.delivered("m2", 0, 151.0, site="b", epoch=1)
    report = judge(tmp_path)
    assert report.dual_owner_epochs == 1
    assert [v.invariant for v in report.violations] == ["dual_owner"]


def test_a_truncated_last_history_line_is_ignored(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0], [1], at_s=100.0)
    for i in range(3):
        run.delivered(f"m{i}", 0, 101.0 + i, site="a", epoch=1)
    run.send("cut", 0, 110.0)
    whole = json.dumps({"op": "ack", "id": "cut", "t": 111.0, "site": "a", "epoch": 1})
    with run.history_path.open("a", encoding="utf-8") as out:
        out.write(whole[: len(whole) // 2])  # the producer was killed while writing
    report = judge(tmp_path)
    assert report.violations == []  # "cut" is in no ledger, but its ack was never recorded
    assert report.acked == 3
    assert report.extra == {"sent": 4, "unacknowledged": 1}


def test_a_truncated_send_line_leaves_its_message_out(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.delivered("m0", 0, 101.0, site="a", epoch=1)
    with run.history_path.open("a", encoding="utf-8") as out:
        out.write('{"op":"send","id":"cut","comp')
    assert judge(tmp_path).extra == {"sent": 1, "unacknowledged": 0}


def test_drain_decisions_are_not_grants(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0, 1], [1, 1], at_s=100.0)
    # A drain keeps the shards' epochs and takes the next number of the counter as its id;
    # a cancelled drain keeps them too. Neither grants anything.
    run.decision("drain", [0], [1], at_s=150.0, max_epoch=2)
    run.decision("cancel_drain", [0], [1], at_s=160.0, max_epoch=2)
    run.decision("drain", [0], [1], at_s=170.0, max_epoch=3)
    run.decision("transfer", [0], [4], at_s=200.0)
    history = load_history(tmp_path)
    assert history.commits == {
        ("eap", 0): [(100.0, 1), (200.0, 4)],
        ("eap", 1): [(100.0, 1)],
    }


def test_work_during_a_drain_is_kept_and_after_the_transfer_it_is_stale(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0], [1], at_s=100.0)
    run.decision("drain", [0], [7], at_s=150.0, max_epoch=7)  # were it a grant, 1 would be old
    run.delivered("draining", 0, 160.0, site="a", epoch=1)
    run.decision("transfer", [0], [8], at_s=200.0, site="b")
    run.delivered("moved", 0, 210.0, site="b", epoch=8)
    run.send("stale", 0, 215.0)
    run.apply("a", [("stale", 0, 1)], at_s=216.0)
    report = judge(tmp_path)
    assert report.stale_epoch_accepts == 1
    assert report.acked_lost == 0  # "stale" was never acknowledged
    assert report.acked == 2


def test_an_empty_run_directory_is_judged_empty(tmp_path: Path) -> None:
    report = judge(tmp_path)
    assert (report.acked, report.acked_lost, report.stale_epoch_accepts) == (0, 0, 0)
    assert report.violations == []
    assert report.extra == {"sent": 0, "unacknowledged": 0}


def test_unavailability_is_given_per_fault_with_returns_labelled(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.decision("initial", [0], [1], at_s=100.0)
    run.delivered("before", 0, 190.0, site="a", epoch=1)
    run.decision("failover", [0], [2], at_s=212.0, site="b")
    run.send("during", 0, 205.0)
    run.apply("b", [("during", 0, 2)], at_s=214.0)
    run.ack("during", 215.0, site="b", epoch=2)  # waited 10 s for the failover
    run.delivered("after", 0, 240.0, site="b", epoch=2)
    faults = [
        FaultEvent(200.0, "site_crash", "a", "inject"),
        FaultEvent(230.0, "site_crash", "a", "heal"),
    ]
    report = judge(tmp_path, faults=faults)
    assert report.unavailability_s == {"site_crash": [10.0], "site_return": [1.0]}
    assert report.faults == faults
    assert report.violations == []
    assert report.max_unavailability_s == 10.0


def test_the_report_counts_each_sites_shards_at_the_end_from_the_runs_store(
    tmp_path: Path,
) -> None:
    allocate(f"sqlite://{tmp_path / 'bfm.db'}", default_topology()).save(tmp_path)
    store = SqliteStore(tmp_path / "bfm.db")
    owners = ["a", "b", "b", None]
    shards = tuple(Assignment(o, 3 if o else 0) for o in owners)
    store.create("ownership/eap", Ownership("eap", shards, 3).to_doc())
    store.close()
    assert judge(tmp_path).shards_per_site == {"eap": {"a": 1, "b": 2}}
    assert judge(tmp_path / "nowhere").shards_per_site == {}
