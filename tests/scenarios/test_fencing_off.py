"""The scenario tests can fail: with fencing switched off (``BFM_TEST_DISABLE_FENCING=1``, a
test build) the checker must catch the stale writes of a resumed module and of a hand-back.

Real processes, as in ``test_demo.py``; the only difference is the environment. With
fencing on, the same scenarios end clean (``test_demo.py``).

A paused module writes stale work only if messages sat in its socket when it stopped; once in
about twenty CI runs none did (the checker then rightly found nothing). A broken build gets
a second run before the test calls the checker blind; a checker that misses stale writes
fails both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_runs import run_demo


@pytest.mark.parametrize(
    ("scenario", "duration_s", "rate"),
    [
        ("component-pause", 14, 300),
        # a returns 10 s after the crash and gets work back after its 10 s hold-off
        ("site-return", 40, 400),
    ],
)
def test_without_fencing_the_checker_finds_stale_writes(
    scenario: str, duration_s: int, rate: int, tmp_path: Path
) -> None:
    for attempt in range(2):
        where = tmp_path / f"attempt-{attempt}"
        where.mkdir()
        done, data = run_demo(
            where,
            scenario,
            duration_s=duration_s,
            rate=rate,
            shards=8,
            env={"BFM_TEST_DISABLE_FENCING": "1"},
        )
        if data.get("stale_epoch_accepts"):
            break
    assert done.returncode == 1, done.stdout + done.stderr  # the checker failed the run
    assert data["stale_epoch_accepts"] > 0, data
    assert "single_writer" in {v["invariant"] for v in data["violations"]}
