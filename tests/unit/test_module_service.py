"""The module service over real TCP on 127.0.0.1: the gate on its site's grants, the ledger,
the acknowledgements."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from failover.adapters.fake_clock import FakeClock
from failover.core.fencing import EpochFence
from failover.workload.envelope import Envelope
from failover.workload.ledger import Ledger
from failover.workload.module import ModuleService


def _frame(i: int, *, kind: str = "alarm", shard: int | None = None) -> bytes:
    env = Envelope(f"m{i}", kind, f"k{i}", i % 4 if shard is None else shard, 1.0)
    return json.dumps({"env": json.loads(env.to_json())}).encode() + b"\n"


async def _exchange(service: ModuleService, payload: bytes, answers: int) -> list[dict[str, Any]]:
    host, port = await service.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    await writer.drain()
    lines = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(answers)]
    writer.close()
    await service.close()
    return lines


class Granted:
    """A site's grants as the module sees them: epoch per shard, valid until a deadline."""

    def __init__(self, clock: FakeClock, epochs: dict[int, int], valid_for_s: float = 1.0) -> None:
        self.clock, self.epochs = clock, epochs
        self.until_s = clock.monotonic() + valid_for_s

    def __call__(self, component: str, index: int) -> tuple[int, float] | None:
        if component != "eap" or index not in self.epochs:
            return None
        return None if self.clock.monotonic() > self.until_s else (self.epochs[index], self.until_s)


def _service(tmp_path: Path, grants: Granted, **kwargs: Any) -> ModuleService:
    return ModuleService(
        "eap",
        ledger=Ledger(tmp_path / "eap.db", site="a"),
        fence=EpochFence(),
        grants=grants,
        monotonic=grants.clock.monotonic,
        wall=grants.clock.wall,
        **kwargs,
    )


ALL = {0: 3, 1: 3, 2: 4, 3: 4}


def test_valid_messages_are_stamped_recorded_then_acknowledged_in_order(tmp_path: Path) -> None:
    service = _service(tmp_path, Granted(FakeClock(), ALL))
    answers = asyncio.run(_exchange(service, b"".join(_frame(i) for i in range(500)), 500))
    assert [a["id"] for a in answers] == [f"m{i}" for i in range(500)]
    assert all(a["ok"] for a in answers)
    assert [a["epoch"] for a in answers[:4]] == [3, 3, 4, 4]
    rows = list(service.ledger.rows())
    assert len(rows) == 500
    assert {(r.shard, r.epoch) for r in rows} == {(0, 3), (1, 3), (2, 4), (3, 4)}


def test_a_retry_is_acknowledged_but_applied_once(tmp_path: Path) -> None:
    service = _service(tmp_path, Granted(FakeClock(), ALL))
    answers = asyncio.run(_exchange(service, _frame(1) + _frame(1), 2))
    assert [a["ok"] for a in answers] == [True, True]
    assert len(service.ledger) == 1
    assert service.stats.duplicates == 1


def test_shards_this_site_holds_no_grant_for_are_refused(tmp_path: Path) -> None:
    service = _service(tmp_path, Granted(FakeClock(), {0: 3}))
    answers = asyncio.run(_exchange(service, _frame(0) + _frame(1), 2))
    assert answers[0]["ok"]
    assert answers[1] == {"id": "m1", "ok": False, "reason": "not-owner", "site": "a"}


def test_a_grant_that_ran_out_admits_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    grants = Granted(clock, ALL)
    clock.advance(1.5)  # the agent stopped renewing the grants
    service = _service(tmp_path, grants)
    answers = asyncio.run(_exchange(service, _frame(1), 1))
    assert answers == [{"id": "m1", "ok": False, "reason": "not-owner", "site": "a"}]
    assert len(service.ledger) == 0


def test_a_superseded_epoch_is_refused(tmp_path: Path) -> None:
    service = _service(tmp_path, Granted(FakeClock(), ALL))
    service.fence.learn("eap", 1, 5)  # a newer owner holds shard 1 under epoch 5
    answers = asyncio.run(_exchange(service, _frame(1) + _frame(0), 2))
    assert answers[0] == {"id": "m1", "ok": False, "reason": "stale-epoch", "site": "a"}
    assert answers[1]["ok"]
    assert [r.id for r in service.ledger.rows()] == ["m0"]


def test_a_grant_running_out_before_the_commit_rolls_the_batch_back(tmp_path: Path) -> None:
    clock = FakeClock()
    grants = Granted(clock, ALL, valid_for_s=0.5)
    service = _service(tmp_path, grants)
    real_apply = service.ledger.apply

    def paused_apply(*args: Any, **kwargs: Any) -> list[bool]:
        clock.advance(1.0)  # the process was stopped between the check and the commit
        return real_apply(*args, **kwargs)

    service.ledger.apply = paused_apply  # type: ignore[method-assign]
    answers = asyncio.run(_exchange(service, _frame(1) + _frame(2), 2))
    assert [a.get("reason") for a in answers] == ["lease-expired", "lease-expired"]
    assert len(service.ledger) == 0


def test_with_fencing_off_nothing_is_checked_at_commit(tmp_path: Path) -> None:
    clock = FakeClock()
    service = _service(tmp_path, Granted(clock, ALL, valid_for_s=0.5), fencing_enabled=False)
    real_apply = service.ledger.apply

    def paused_apply(*args: Any, **kwargs: Any) -> list[bool]:
        clock.advance(1.0)
        return real_apply(*args, **kwargs)

    service.ledger.apply = paused_apply  # type: ignore[method-assign]
    answers = asyncio.run(_exchange(service, _frame(1), 1))
    assert answers[0]["ok"]


def test_garbage_is_refused_and_the_connection_goes_on(tmp_path: Path) -> None:
    service = _service(tmp_path, Granted(FakeClock(), ALL))
    payload = b"not json\n" + b'{"env": 3}\n' + b'{"env": {"id": "x"}}\n'
    payload += _frame(1, kind="event") + _frame(2)
    answers = asyncio.run(_exchange(service, payload, 5))
    assert [a.get("reason") for a in answers] == [
        "malformed",
        "malformed",
        "malformed",
        "wrong-module",
        None,
    ]
    assert answers[2]["id"] == "x"
    assert service.stats.refused == {"malformed": 3, "wrong-module": 1}


def test_a_ledger_that_cannot_write_refuses_instead_of_acknowledging(tmp_path: Path) -> None:
    service = _service(tmp_path, Granted(FakeClock(), ALL))
    service.ledger.close()
    answers = asyncio.run(_exchange(service, _frame(1), 1))
    assert answers == [{"id": "m1", "ok": False, "reason": "ledger-error", "site": "a"}]


def test_a_grant_withdrawn_after_admission_is_refused_at_the_commit(tmp_path: Path) -> None:
    """Admission sees a cached grant; the fresh view at the commit no longer has it (the
    agent drained or released the shard meanwhile): nothing is recorded or acknowledged."""
    clock = FakeClock()
    cached = Granted(clock, ALL)
    now = Granted(clock, {0: 3, 1: 3, 2: 4})  # shard 3 withdrawn
    service = _service(tmp_path, cached, grants_now=now)
    answers = asyncio.run(_exchange(service, _frame(3), 1))
    assert answers == [{"id": "m3", "ok": False, "reason": "lease-expired", "site": "a"}]
    assert len(service.ledger) == 0


def test_a_grant_moved_to_a_newer_epoch_is_refused_at_the_commit(tmp_path: Path) -> None:
    clock = FakeClock()
    service = _service(tmp_path, Granted(clock, ALL), grants_now=Granted(clock, {**ALL, 3: 9}))
    answers = asyncio.run(_exchange(service, _frame(3), 1))
    assert answers[0]["reason"] == "lease-expired"
    assert len(service.ledger) == 0


def test_without_fencing_the_cached_grant_decides_alone(tmp_path: Path) -> None:
    """The test build with fencing off (BFM_TEST_DISABLE_FENCING=1) writes under the stale
    grant: this is the stale write the checker must catch in the scenario tests."""
    clock = FakeClock()
    service = _service(
        tmp_path,
        Granted(clock, ALL),
        grants_now=Granted(clock, {}),
        fencing_enabled=False,
    )
    answers = asyncio.run(_exchange(service, _frame(3), 1))
    assert answers == [{"id": "m3", "ok": True, "epoch": 4, "site": "a"}]
    assert len(service.ledger) == 1
