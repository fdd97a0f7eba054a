"""The module service over real TCP on 127.0.0.1: checks, ledger, acknowledgements."""

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


def _frame(i: int, *, epoch: int = 1, kind: str = "alarm", valid_until: float = 2000.0) -> bytes:
    env = Envelope(f"m{i}", kind, f"k{i}", i % 4, 1.0, epoch=epoch)
    return (
        json.dumps({"env": json.loads(env.to_json()), "valid_until_mono_s": valid_until}).encode()
        + b"\n"
    )


async def _exchange(service: ModuleService, payload: bytes, answers: int) -> list[dict[str, Any]]:
    host, port = await service.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    await writer.drain()
    lines = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(answers)]
    writer.close()
    await service.close()
    return lines


def _service(tmp_path: Path, clock: FakeClock, **kwargs: Any) -> ModuleService:
    return ModuleService(
        "eap",
        ledger=Ledger(tmp_path / "eap.db", site="a"),
        fence=EpochFence(),
        monotonic=clock.monotonic,
        wall=clock.wall,
        **kwargs,
    )


def test_valid_messages_are_recorded_then_acknowledged_in_order(tmp_path: Path) -> None:
    clock = FakeClock()
    service = _service(tmp_path, clock)
    payload = b"".join(_frame(i) for i in range(500))
    answers = asyncio.run(_exchange(service, payload, 500))
    assert [a["id"] for a in answers] == [f"m{i}" for i in range(500)]
    assert all(a["ok"] for a in answers)
    assert len(service.ledger) == 500
    assert service.stats.applied == 500


def test_a_retry_is_acknowledged_but_applied_once(tmp_path: Path) -> None:
    service = _service(tmp_path, FakeClock())
    answers = asyncio.run(_exchange(service, _frame(1) + _frame(1), 2))
    assert [a["ok"] for a in answers] == [True, True]
    assert len(service.ledger) == 1
    assert service.stats.duplicates == 1


def test_a_superseded_epoch_is_refused(tmp_path: Path) -> None:
    service = _service(tmp_path, FakeClock())
    service.fence.learn("eap", 1, 5)  # a newer owner holds shard 1 under epoch 5
    answers = asyncio.run(_exchange(service, _frame(1, epoch=4) + _frame(5, epoch=5), 2))
    assert answers[0] == {"id": "m1", "ok": False, "reason": "stale-epoch"}
    assert answers[1]["ok"]
    assert [r.id for r in service.ledger.rows()] == ["m5"]


def test_work_admitted_under_a_grant_that_ran_out_is_refused(tmp_path: Path) -> None:
    clock = FakeClock()  # monotonic 1000.0
    service = _service(tmp_path, clock)
    answers = asyncio.run(_exchange(service, _frame(1, valid_until=999.0) + _frame(2), 2))
    assert answers[0] == {"id": "m1", "ok": False, "reason": "lease-expired"}
    assert answers[1]["ok"]


def test_with_fencing_off_the_deadline_is_not_checked(tmp_path: Path) -> None:
    service = _service(tmp_path, FakeClock(), check_deadline=False)
    answers = asyncio.run(_exchange(service, _frame(1, valid_until=0.0), 1))
    assert answers[0]["ok"]


def test_garbage_is_refused_and_the_connection_goes_on(tmp_path: Path) -> None:
    service = _service(tmp_path, FakeClock())
    payload = b"not json\n" + b'{"env": 3}\n' + b'{"env": {"id": "x"}, "valid_until_mono_s": 1}\n'
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
    service = _service(tmp_path, FakeClock())
    service.ledger.close()
    answers = asyncio.run(_exchange(service, _frame(1), 1))
    assert answers == [{"id": "m1", "ok": False, "reason": "ledger-error"}]
